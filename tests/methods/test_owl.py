"""OWL allocator: block ratios average exactly to the target; more outliers -> less sparsity."""

from __future__ import annotations

import pytest

from harness.blocks.allocators import OWL
from harness.blocks.measure import measure_sparsity
from harness.targets import Target
from methods.registry import build_method
from tests.methods.tiny_block_helpers import tiny_context


def test_spread_keeps_mean_and_orders_by_outliers():
    ratios = OWL(m=5, lam=0.08).spread([0.01, 0.03, 0.02, 0.05], 0.7)
    assert sum(ratios) / len(ratios) == pytest.approx(0.7, abs=1e-12)
    assert ratios[3] < ratios[1] < ratios[2] < ratios[0]        # most outliers -> pruned least
    assert max(ratios) - min(ratios) == pytest.approx(0.16)


def test_owl_allocation_mean_equals_target_and_prunes():
    target = Target("unstructured_70", "unstructured", 0.7)
    model, adapter, ctx = tiny_context(target, allocator="owl")
    report = build_method("wanda").prune(model, ctx)
    ratios = report["allocation"]["block_ratios"]
    assert report["allocation"]["allocator"] == "owl"
    assert sum(ratios) / len(ratios) == pytest.approx(0.7, abs=1e-9)
    assert len(set(round(r, 9) for r in ratios)) > 1
    assert len(report["owl"]["outlier_ratios"]) == len(ratios)
    assert measure_sparsity(model, adapter)["sparsity_blocks"] == pytest.approx(0.7, abs=0.01)
