"""Contract matrix across families (conf/model/tiny-<family>.yaml). Every method x pattern runs on
two families in test_contract.py (LLaMA, Gemma-2); here every family runs a representative subset:
Wanda unstructured 50%, SparseGPT 2:4, ShortGPT 25% depth, Minitron width where width surgery
applies, expert pruning on MoE families. Measured on the stored weights / the model's own size."""

from __future__ import annotations

import math

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.allocators import build_allocator
from harness.blocks.context import PruneContext
from harness.blocks.measure import measure_sparsity
from harness.experts import routed_experts
from harness.targets import Target, TargetError
from methods.registry import build_method
from tests.conftest import MOE_FAMILIES, TINY_FAMILIES, make_tiny_family
from tests.methods.test_contract import _calibration

WIDTH_FAMILIES = ["cohere", "gemma2", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"]
CASES = [("wanda", Target("unstructured_50", "unstructured", 0.5)),
         ("sparsegpt", Target("nm_2_4", "nm", 0.5, n=2, m=4)),
         ("shortgpt", Target("depth_25", "blocks", 0.25))]


def _ctx(model, target, seq=24):
    return PruneContext(adapter=adapter_for(model), target=target, calibration=_calibration(n=4, seq=seq),
                        device="cpu", allocator=build_allocator("uniform"), batch_size=2)


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _finite(model):
    with torch.no_grad():
        return torch.isfinite(model(torch.randint(0, 250, (1, 20))).logits).all()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("name,target", CASES, ids=[c[0] for c in CASES])
def test_family_contract(family, name, target):
    model, _ = make_tiny_family(family)
    ctx = _ctx(model, target)
    method = build_method(name, {"latency_repeats": 0} if name == "shortgpt" else {})
    n_blocks = len(ctx.adapter.blocks(model))
    before = _params(model)
    method.check(model, ctx)
    method.prune(model, ctx)
    if target.pattern == "blocks":
        k = math.floor(0.25 * n_blocks + 0.5)
        assert len(ctx.adapter.blocks(model)) == model.config.num_hidden_layers == n_blocks - k
        assert _params(model) < before
    else:
        m = measure_sparsity(model, ctx.adapter, target.n, target.m)
        if target.is_nm:
            assert m["nm_check"]["violations"] == 0
        assert m["sparsity_blocks"] == pytest.approx(0.5, abs=0.005)
    assert _finite(model)


@pytest.mark.parametrize("family", WIDTH_FAMILIES)
def test_width_contract(family):
    """Minitron width 20% (heads + MLP channels; hidden channels too where the norms are RMS)."""
    model, _ = make_tiny_family(family)
    axes = "heads,mlp" if family == "cohere" else "mlp,hidden"
    ctx = _ctx(model, Target("width_20", "width", 0.2))
    method = build_method("minitron", {"axes": axes, "latency_repeats": 0})
    before = _params(model)
    method.check(model, ctx)
    report = method.prune(model, ctx)
    removed = 1 - _params(model) / before
    # the plan counts a LLaMA layout; families with extra norms (Gemma, Qwen3) land close to it
    assert removed == pytest.approx(0.2, abs=0.02), report.get("width_plan")
    assert _finite(model)


def test_width_refused_before_surgery_where_it_cannot_apply():
    for family, match in (("phi3", "fused attention"), ("olmo2", "attention norm"), ("mixtral", "routed experts")):
        model, _ = make_tiny_family(family)
        with pytest.raises(TargetError, match=match):
            build_method("minitron", {}).check(model, _ctx(model, Target("width_20", "width", 0.2)))
    cohere, _ = make_tiny_family("cohere")
    shape = [p.shape for p in cohere.parameters()]
    with pytest.raises(Exception, match="LayerNorm"):
        build_method("minitron", {"axes": "mlp,hidden", "latency_repeats": 0}).prune(
            cohere, _ctx(cohere, Target("width_20", "width", 0.2)))
    assert [p.shape for p in cohere.parameters()] == shape   # nothing was cut before the refusal


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_expert_pruning_keeps_router_and_config_consistent(family, tmp_path):
    from transformers import AutoModelForCausalLM

    model, _ = make_tiny_family(family)
    ctx = _ctx(model, Target("experts_25", "experts", 0.25))
    method = build_method("expert_drop", {"latency_repeats": 0})
    method.check(model, ctx)
    report = method.prune(model, ctx)["experts"]
    for i, block in enumerate(ctx.adapter.blocks(model)):
        path, experts = routed_experts(block)
        entry = report[ctx.adapter.block_prefix(i)]
        assert experts.num_experts == len(experts.experts) == 3
        # the lowest soft count went: routing frequency x gate weight
        assert min(entry["importance"]) == entry["importance"][entry["removed"][0]]
        assert sum(entry["tokens"]) == 4 * 24 * model.config.num_experts_per_tok
        router = block.get_submodule(path.rpartition(".")[0]).gate
        assert router.weight.shape[0] == 3
    assert max(getattr(model.config, k, 0) or 0 for k in ("num_local_experts", "num_experts")) == 3
    ids = torch.randint(0, 250, (2, 20))
    model.save_pretrained(tmp_path, safe_serialization=True)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (back(ids).logits - model(ids).logits).abs().max() < 1e-5


def test_expert_without_routed_tokens_is_reported_and_still_pruned():
    """Route every token away from expert 3: Wanda prunes it on all tokens of its layer, and the
    report names its linears."""
    model, _ = make_tiny_family("mixtral")
    adapter = adapter_for(model)
    for block in adapter.blocks(model):
        gate = block.mlp.gate
        original = gate.forward
        gate.forward = lambda h, original=original: (lambda lg, w, idx: (lg, w, idx % 3))(*original(h))
    ctx = _ctx(model, Target("unstructured_50", "unstructured", 0.5))
    unreached = build_method("wanda", {}).prune(model, ctx)["linears_without_routed_tokens"]
    assert sorted(unreached) == sorted(f"model.layers.{i}.mlp.experts.experts.3.{p}" for i in range(4)
                                       for p in ("gate_proj", "up_proj", "down_proj"))
    m = measure_sparsity(model, adapter, None, None)
    for i in range(4):
        for p in ("gate_proj", "up_proj", "down_proj"):
            assert m["per_layer"][f"model.layers.{i}.mlp.experts.experts.3.{p}"] == pytest.approx(0.5)
