"""DSnoT: with exact-error acceptance (a prunebench option) prune-and-grow never raises a layer's
reconstruction error over the base mask; every row's sparsity stays exact. Parity with the
reference's default run is tests/parity/test_dsnot.py."""

from __future__ import annotations

import pytest
import torch

from harness.blocks.masks import keep_unstructured
from harness.blocks.measure import measure_sparsity
from harness.targets import Target
from methods.dsnot import dsnot_refine
from methods.registry import build_method
from methods.wanda import wanda_score
from tests.methods.tiny_block_helpers import correlated_inputs, recon_error, tiny_context


@pytest.mark.parametrize("sparsity,seed", [(0.5, 0), (0.6, 1), (0.7, 2)])
def test_refinement_never_raises_reconstruction_error(sparsity, seed):
    x = correlated_inputs(512, 64, seed) + 0.5                        # nonzero means
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(seed + 10))
    norm = x.pow(2).mean(0).sqrt()
    importance = wanda_score(w, norm)
    base = keep_unstructured(importance, sparsity, group="row")
    keep, swaps = dsnot_refine(w, base, importance, x.mean(0), max_cycles=30, update_threshold=0.0,
                               gram=x.t() @ x)
    assert swaps > 0                                                   # it did something
    assert torch.equal(keep.sum(1), base.sum(1))                       # exact per-row sparsity
    assert recon_error(x, w, w * keep) < recon_error(x, w, w * base)


def test_dsnot_method_wraps_base_and_keeps_sparsity():
    target = Target("unstructured_60", "unstructured", 0.6)
    model, adapter, ctx = tiny_context(target)
    report = build_method("dsnot", {"base": "wanda", "update_threshold": 0.0}).prune(model, ctx)
    assert report["dsnot"]["base"]["name"] == "wanda" and report["dsnot"]["swaps"] > 0
    base_model, base_adapter, base_ctx = tiny_context(target)
    build_method("wanda").prune(base_model, base_ctx)
    # same per-row counts as the base (int(cols * 0.6) per row), layer by layer
    assert measure_sparsity(model, adapter)["per_layer"] == measure_sparsity(base_model, base_adapter)["per_layer"]


def test_dsnot_rejects_weight_updating_base():
    with pytest.raises(ValueError, match="mask-only"):
        build_method("dsnot", {"base": "sparsegpt"})
