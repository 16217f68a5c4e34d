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


def column_by_column(weight, hinv, sparsity, n=None, m=None, blocksize=128):
    """The sweep as the reference writes it (fasterprune), one column at a time, with prunebench's
    exact-count unstructured selection: what `sparsegpt_prune` must equal bit for bit."""
    w = weight.clone().float()
    rows, cols = w.shape
    for c1 in range(0, cols, blocksize):
        c2 = min(c1 + blocksize, cols)
        w1, hinv1 = w[:, c1:c2].clone(), hinv[c1:c2, c1:c2]
        q1, err1 = torch.zeros_like(w1), torch.zeros_like(w1)
        d = torch.diag(hinv1)
        prune1 = torch.zeros_like(w1, dtype=torch.bool)
        if n is None:
            k = int(rows * c2 * sparsity) - int(rows * c1 * sparsity)
            crit = w1.pow(2) / d.reshape(1, -1).pow(2)
            prune1.view(-1)[torch.sort(crit.flatten(), stable=True).indices[:k]] = True
        for i in range(c2 - c1):
            col = w1[:, i]
            if n is not None and i % m == 0:
                crit = w1[:, i:i + m].pow(2) / d[i:i + m].reshape(1, -1).pow(2)
                prune1.scatter_(1, i + torch.topk(crit, m - n, dim=1, largest=False).indices, True)
            q = col.clone()
            q[prune1[:, i]] = 0
            q1[:, i] = q
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = e
        w[:, c1:c2] = q1
        w[:, c2:] -= err1.matmul(hinv[c1:c2, c2:])
    return w


@pytest.mark.parametrize("nm", [None, (2, 4), (4, 8)])
@pytest.mark.parametrize("shape", [(48, 64, 32), (40, 200, 64)])   # rows, cols, blocksize (ragged last block)
def test_sweep_bit_identical_to_column_by_column(nm, shape):
    rows, cols, bs = shape
    x = correlated_inputs(512, cols)
    hinv = inverse_hessian_factor(2 * x.t() @ x / x.shape[0], 0.01)
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(5))
    n, m = nm if nm else (None, None)
    for sparsity in ([0.5, 0.7] if nm is None else [0.5]):
        assert torch.equal(sparsegpt_prune(w, hinv, sparsity, n, m, bs), column_by_column(w, hinv, sparsity, n, m, bs))


@pytest.mark.gpu
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sweep_bit_identical_to_column_by_column_on_cuda(nm):
    """The same bit-identity on a GPU, where the sweep divides by 0-dim tensors as the reference does
    (a Python-float divisor would become a multiply by its reciprocal there)."""
    x = correlated_inputs(512, 200).cuda()
    hinv = inverse_hessian_factor(2 * x.t() @ x / x.shape[0], 0.01)
    w = torch.randn(40, 200, generator=torch.Generator().manual_seed(5)).cuda()
    n, m = nm if nm else (None, None)
    assert torch.equal(sparsegpt_prune(w, hinv, 0.5, n, m, 64), column_by_column(w, hinv, 0.5, n, m, 64))

@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_stacked_reconstruction_equals_one_sweep_per_linear(nm):
    """Linears sharing an input (q/k/v) reconstructed as one stacked matrix: each gets the mask and
    the weights of its own sweep, bit for bit (rows never mix; the lazy update is per segment)."""
    x = correlated_inputs(512, 96)
    hinv = inverse_hessian_factor(2 * x.t() @ x / x.shape[0], 0.01)
    g = torch.Generator().manual_seed(4)
    ws = [torch.randn(rows, 96, generator=g) for rows in (48, 16, 16)]
    n, m = nm if nm else (None, None)
    alone = [sparsegpt_prune(w, hinv, 0.5, n, m, blocksize=32) for w in ws]
    stacked = sparsegpt_prune(torch.cat(ws), hinv, 0.5, n, m, blocksize=32, segments=[48, 16, 16])
    for a, b in zip(alone, stacked.split([48, 16, 16])):
        assert torch.equal(a == 0, b == 0)
        assert torch.equal(a, b)


@pytest.mark.parametrize("target", [Target("unstructured_50", "unstructured", 0.5), Target("nm_2_4", "nm", 0.5, n=2, m=4)],
                         ids=lambda t: t.name)
def test_stacked_equals_per_linear_on_tiny_model(target):
    """The whole method on a tiny LLaMA: stacked q/k/v and gate/up sweeps (the default) give the
    same masks and weights as one sweep per linear, block after block."""
    weights = []
    for stack in (True, False):
        model, adapter, ctx = tiny_context(target)
        build_method("sparsegpt", {"stack_shared": stack, "blocksize": 32}).prune(model, ctx)
        weights.append([lin.weight.detach().clone() for b in adapter.blocks(model)
                        for lin in adapter.linears(b).values()])
    for a, b in zip(*weights):
        assert torch.equal(a == 0, b == 0)
        assert torch.equal(a, b)
