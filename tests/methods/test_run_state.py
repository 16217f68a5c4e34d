"""A method (and an allocator) is its hyper-parameters: a prune run leaves no per-run state on the
instance. The report comes back from `prune`; counters and logs live in the run's locals."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from harness.targets import Target
from methods.registry import build_method
from tests.methods.tiny_block_helpers import tiny_context

UNSTRUCTURED = Target("unstructured_50", "unstructured", 0.5)
NM = Target("nm_2_4", "nm", 0.5, n=2, m=4)
DEPTH = Target("depth_25", "blocks", 0.25)
WIDTH = Target("width_20", "width", 0.2)

CASES = [
    ("ria", {}, UNSTRUCTURED, "uniform"),
    ("ria", {"permute": True}, NM, "uniform"),
    ("dsnot", {}, UNSTRUCTURED, "uniform"),
    ("besa", {"steps": 2}, UNSTRUCTURED, "uniform"),
    ("wanda", {}, UNSTRUCTURED, "owl"),
    ("sparsegpt", {}, UNSTRUCTURED, "uniform"),
    ("shortgpt", {"latency_repeats": 0}, DEPTH, "uniform"),
    ("minitron", {"latency_repeats": 0}, WIDTH, "uniform"),
]


@pytest.mark.parametrize("name,params,target,allocator", CASES, ids=lambda c: c if isinstance(c, str) else None)
def test_prune_leaves_no_run_state_on_the_method(name, params, target, allocator):
    model, _adapter, ctx = tiny_context(target, allocator)
    method = build_method(name, params)
    before, alloc_before = copy.deepcopy(vars(method)), copy.deepcopy(vars(ctx.allocator))
    method.check(model, ctx)
    report = method.prune(model, ctx)
    assert isinstance(report, dict) and report
    assert vars(method).keys() == before.keys(), "attributes added during prune"
    assert vars(method) == before, "attributes changed during prune"
    assert vars(ctx.allocator) == alloc_before
    # nothing beyond the hyper-parameters, except objects built from them (DSnoT's base method)
    fields = {f.name for f in dataclasses.fields(method)}
    assert set(vars(method)) - fields <= {"_base"}


def test_prune_context_has_no_report():
    """The prune report is what `Method.prune` returns; the context does not carry one."""
    _model, _adapter, ctx = tiny_context(UNSTRUCTURED)
    assert not hasattr(ctx, "report")
