"""SparseGPT: layer reconstruction beats magnitude; exact counts; shared Hessians untouched and
equivalent to one Hessian per linear."""

from __future__ import annotations

import pytest
import torch

from harness.blocks.masks import keep_nm, keep_unstructured, nm_violations
from harness.targets import Target
from methods.registry import build_method
from methods.sparsegpt import inverse_hessian_factor, sparsegpt_prune
from tests.methods.tiny_block_helpers import correlated_inputs, recon_error, tiny_context


@pytest.mark.parametrize("nm", [None, (2, 4), (4, 8)])
def test_reconstruction_error_not_above_magnitude(nm):
    x = correlated_inputs(1024, 64)                                  # [tokens, in]
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1))
    h = 2 * x.t() @ x / x.shape[0]
    h_before = h.clone()
    n, m = nm if nm else (None, None)
    pruned = sparsegpt_prune(w, inverse_hessian_factor(h, 0.01), 0.5, n, m, blocksize=32)
    assert torch.equal(h, h_before), "the (shared) Hessian must not be modified"
    keep = keep_nm(w.abs(), n, m) if nm else keep_unstructured(w.abs(), 0.5, group="layer")
    magnitude = w * keep
    assert recon_error(x, w, pruned) < recon_error(x, w, magnitude)
    assert int((pruned == 0).sum()) == w.numel() // 2                 # exact count
    if nm:
        assert nm_violations(pruned, n, m)[0] == 0


def test_exact_count_with_odd_ratio_across_column_blocks():
    x = correlated_inputs(256, 96)
    w = torch.randn(10, 96, generator=torch.Generator().manual_seed(2))
    hinv = inverse_hessian_factor(2 * x.t() @ x / 256, 0.01)
    pruned = sparsegpt_prune(w, hinv, 0.7, blocksize=32)
    assert int((pruned == 0).sum()) == int(w.numel() * 0.7)


def test_shared_hessians_equal_per_linear_hessians():
    target = Target("unstructured_50", "unstructured", 0.5)
    weights = []
    for share in (True, False):
        model, adapter, ctx = tiny_context(target)
        report = build_method("sparsegpt", {"share_hessians": share, "blocksize": 32}).prune(model, ctx)
        assert report["timing"]["collect_s"] > 0
        weights.append([lin.weight.detach().clone() for b in adapter.blocks(model)
                        for lin in adapter.linears(b).values()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_stacked_reconstruction_equals_one_sweep_per_linear(nm):
    """Linears sharing an input (q/k/v) reconstructed as one stacked matrix: each gets the mask of
    its own sweep, and weights equal to float rounding (rows never mix; only BLAS blocking of the
    lazy update may differ)."""
    x = correlated_inputs(512, 64)
    hinv = inverse_hessian_factor(2 * x.t() @ x / x.shape[0], 0.01)
    g = torch.Generator().manual_seed(4)
    ws = [torch.randn(rows, 64, generator=g) for rows in (48, 16, 16)]
    n, m = nm if nm else (None, None)
    alone = [sparsegpt_prune(w, hinv, 0.5, n, m, blocksize=32) for w in ws]
    stacked = sparsegpt_prune(torch.cat(ws), hinv, 0.5, n, m, blocksize=32, segments=[48, 16, 16])
    for a, b in zip(alone, stacked.split([48, 16, 16])):
        assert torch.equal(a == 0, b == 0)
        assert torch.allclose(a, b, rtol=0, atol=1e-5)
