"""Contract matrix: every registered weight-pruning method x every pattern it supports, on a tiny
random-init LLaMA (GQA). Adding a method = one row here (or none: rows are derived from the
registry, so a new WeightPruner is covered automatically for its declared patterns)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.allocators import build_allocator
from harness.blocks.context import PruneContext
from harness.blocks.measure import measure_sparsity
from harness.calibration import CalibrationSet
from harness.hashing import sha256_tokens
from harness.targets import Target
from methods.base import WeightPruner
from methods.registry import available, build_method, get_method_class
from tests.conftest import make_tiny, make_tiny_family

TARGETS = {
    "unstructured": Target("unstructured_50", "unstructured", 0.5),
    "nm": Target("nm_2_4", "nm", 0.5, n=2, m=4),
}
# Extra constructor parameters a method needs in the matrix (e.g. a wrapper's base method).
PARAMS: dict[str, dict] = {
    # the reference solves 2000 weights jointly (a tiny layer is then one 2000x2000 system per shot)
    "llm_surgeon": {"max_correlate": 64, "shots": 2},
}


def _calibration(n=4, seq=32, vocab=260, seed=0) -> CalibrationSet:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 4, (n, seq), generator=g)
    return CalibrationSet(ids, "random", "train", n, seq, seed, "test", sha256_tokens(ids), None, "random", None)


def _cases():
    for name in available():
        cls = get_method_class(name)
        if issubclass(cls, WeightPruner) or cls.patterns & set(TARGETS):
            for pattern in sorted(cls.patterns & set(TARGETS)):
                yield pytest.param(name, pattern, id=f"{name}-{pattern}")


# LLaMA (GQA) and Gemma-2 (alternating sliding/global layers, post-sublayer norms, (1 + w) norms,
# scaled embeddings): every method on both; every family on a subset in test_contract_families.py
@pytest.mark.parametrize("family", ["llama", "gemma2"])
@pytest.mark.parametrize("name,pattern", list(_cases()))
def test_method_contract(name, pattern, family):
    model, tok = make_tiny_family(family) if family != "llama" else make_tiny("llama")
    adapter = adapter_for(model)
    target = TARGETS[pattern]
    method = build_method(name, PARAMS.get(name, {}))
    emb_before = adapter.embedding(model).weight.detach().clone()
    ctx = PruneContext(adapter=adapter, target=target, calibration=_calibration(), device="cpu",
                       allocator=build_allocator("uniform"), batch_size=2)
    method.check(model, ctx)
    method.prune(model, ctx)
    if method.training_recoveries:   # prunes while training: its schedule to the end, no optimizer step between
        hook = method.training_hook(model, SimpleNamespace(adapter=adapter, prune=ctx), 8)
        for step in range(1, 9):
            hook(step)
    m = measure_sparsity(model, adapter, target.n, target.m)
    if pattern == "nm":
        assert m["nm_check"]["violations"] == 0, "N:M pattern broken on stored weights"
        assert m["sparsity_blocks"] == pytest.approx(0.5, abs=1e-9)
    else:
        assert m["sparsity_blocks"] == pytest.approx(target.ratio, abs=0.005)
    # Embeddings and lm_head (tied here) are outside the default scope.
    assert torch.equal(adapter.embedding(model).weight, emb_before)
    # The pruned model still runs and gives finite logits.
    out = model(torch.randint(0, 250, (1, 16))).logits
    assert torch.isfinite(out).all()
    # Tags and metadata are complete.
    d = method.describe()
    assert d["version"] and d["paper"] and set(d["tags"]) >= {"type", "criteria", "budget", "data", "retrain", "weights"}


def test_every_method_has_a_config_of_the_same_name():
    from harness.config import CONF_DIR

    for name in available():
        assert (CONF_DIR / "method" / f"{name}.yaml").is_file(), f"conf/method/{name}.yaml missing"
