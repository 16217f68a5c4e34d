"""BESA: every block meets the target exactly; the learned allocation is not uniform."""

from __future__ import annotations

from harness.targets import Target
from methods.registry import build_method
from tests.methods.tiny_block_helpers import tiny_context


def test_besa_meets_target_per_block():
    target = Target("unstructured_50", "unstructured", 0.5)
    model, adapter, ctx = tiny_context(target)
    report = build_method("besa", {"steps": 4}).prune(model, ctx)
    for block in adapter.blocks(model):
        lins = adapter.linears(block).values()
        total = sum(lin.weight.numel() for lin in lins)
        zeros = sum(int((lin.weight == 0).sum()) for lin in lins)
        assert zeros == int(total * 0.5)
    logs = report["besa"]["blocks"]
    assert len(logs) == len(adapter.blocks(model))
    per_layer = [r for log in logs for r in log["layer_sparsity"].values()]
    assert max(per_layer) - min(per_layer) > 0.005        # allocation is learned, not uniform
