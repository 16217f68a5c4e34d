"""Wanda reduces to magnitude when every input channel has the same norm (same comparison group:
Wanda compares within each output row, so the row-group magnitude selection is the reference)."""

from __future__ import annotations

import torch
from torch import nn

from harness.blocks.masks import keep_nm, keep_unstructured
from harness.targets import Target
from methods.registry import build_method


def _linear(seed=0):
    lin = nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 64, generator=torch.Generator().manual_seed(seed)))
    return lin


def test_wanda_equals_row_magnitude_with_equal_input_norms():
    target = Target("unstructured_50", "unstructured", 0.5)
    lin = _linear()
    dense = lin.weight.detach().clone()
    build_method("wanda").prune_linear("x", lin, {"input_norm": torch.full((64,), 3.7)}, 0.5, target)
    assert torch.equal(lin.weight != 0, keep_unstructured(dense.abs(), 0.5, group="row"))
    # and it differs from it once the norms differ (the test can fail)
    lin2 = _linear()
    norms = torch.rand(64, generator=torch.Generator().manual_seed(3)) * 10
    build_method("wanda").prune_linear("x", lin2, {"input_norm": norms}, 0.5, target)
    assert not torch.equal(lin2.weight != 0, keep_unstructured(dense.abs(), 0.5, group="row"))


def test_wanda_equals_magnitude_nm_with_equal_input_norms():
    target = Target("nm_2_4", "nm", 0.5, 2, 4)
    a, b = _linear(1), _linear(1)
    build_method("wanda").prune_linear("x", a, {"input_norm": torch.ones(64)}, 0.5, target)
    build_method("magnitude").prune_linear("x", b, {}, 0.5, target)
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(a.weight != 0, keep_nm(_linear(1).weight.detach().abs(), 2, 4))
