"""OWL's block ratios equal luuyin/OWL's prune_wanda_outlier: per block, the share of Wanda scores
|W| sqrt(scaler_row) (every linear of the block pooled) above M times their mean, on the dense
model; min-max scaled to [0, 2*lam]; density = scaled - mean + (1 - target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.blocks.allocators import OWL
from methods.registry import build_method
from tests.parity.reference_pipeline import run_reference
from tests.parity.tiny import context, model_pair, unstructured


def test_owl_block_ratios_equal_reference():
    m, lam, target = 3.0, 0.08, 0.7
    ours, ref = model_pair(seed=1, num_hidden_layers=4)
    ctx = context(ours, unstructured(target), allocator="owl", allocator_params={"m": m, "lam": lam})
    report = build_method("wanda").prune(ours, ctx)
    got = report["allocation"]["block_ratios"]

    scores: dict[int, list[torch.Tensor]] = {}
    run_reference(ref, ctx.calibration.input_ids,                      # no-op rule: dense model
                  lambda i, _n, lin, st: scores.setdefault(i, []).append(
                      (lin.weight.data.abs() * st.scaler_row.sqrt().reshape(1, -1)).flatten()))
    outlier = []
    for i in sorted(scores):
        pooled = torch.cat(scores[i])
        outlier.append(float((pooled > pooled.mean() * m).sum()) / pooled.numel() * 100)
    a = np.array(outlier)
    assert a.max() > a.min(), "the tiny model must give blocks different outlier ratios"
    a = (a - a.min()) * (1 / (a.max() - a.min()) * lam * 2)
    a = a - np.mean(a) + (1 - target)
    want = [1 - x for x in a]
    # float64 both sides; the x100 scale and operation order differ, so allow 1e-12
    assert np.allclose(got, want, rtol=0, atol=1e-12)
    assert abs(np.mean(got) - target) < 1e-12


def test_owl_mean_stays_exact_when_a_block_hits_the_bound():
    ratios = OWL(lam=0.08).spread([1] * 29 + [0], 0.9)      # the reference would give one block 1.05
    assert abs(sum(ratios) / 30 - 0.9) < 1e-12
    assert max(ratios) <= 0.99 and min(ratios) >= 0
    order = OWL(lam=0.08).spread([0.3, 0.1, 0.5, 0.2], 0.5)
    assert abs(sum(order) / 4 - 0.5) < 1e-12


def test_owl_rejects_unreachable_target():
    with pytest.raises(ValueError, match="outside"):
        OWL().spread([0.1, 0.2], 0.995)


