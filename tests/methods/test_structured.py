"""Structured methods (depth, shortgpt, llm_pruner, minitron) on tiny GQA LLaMAs: importance
metrics behave as defined, the removed units are the ones the scores pick, parameter budgets are
met and recorded exactly, and the pruned models reload and generate."""

from __future__ import annotations

import math

import pytest
import torch

from harness import surgery
from harness.adapters import adapter_for
from harness.blocks import importance as imp
from harness.blocks.allocators import build_allocator
from harness.blocks.context import PruneContext
from harness.targets import Target, TargetError
from harness.width import plan_width
from methods.registry import available, build_method, get_method_class
from methods._structured import StructuredMethod
from tests.conftest import make_tiny
from tests.methods.test_contract import _calibration

GQA = dict(num_attention_heads=6, num_key_value_heads=2, head_dim=8, hidden_size=48)


def _ctx(model, target, calib=True):
    return PruneContext(adapter=adapter_for(model), target=target, calibration=_calibration() if calib else None,
                        device="cpu", allocator=build_allocator("uniform"), batch_size=2)


def _count(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# pure metric functions

def test_similarity_metrics_by_definition():
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    assert imp.block_influence(x, x) == pytest.approx(0.0, abs=1e-12)
    assert imp.block_influence(x, -x) == pytest.approx(2.0)
    assert imp.angular_distance(x, -x) == pytest.approx(1.0)
    assert imp.angular_distance(x, 3 * x) == pytest.approx(0.0, abs=1e-6)
    assert imp.relative_lp(x, 3 * x, 2) == pytest.approx(2.0)
    assert imp.relative_lp(x, 1.5 * x, 1) == pytest.approx(0.5)
    y = x.clone()
    y[:, -1] = -y[:, -1]  # only the last token flips: angular (last token) sees it fully
    assert imp.angular_distance(x, y) == pytest.approx(1.0)
    assert imp.block_influence(x, y) == pytest.approx(2.0 / 5)


def test_select_units_spans_and_lowest():
    s = torch.tensor([3.0, 1.0, 2.0, 0.5, 9.0])
    assert imp.select_units(s, 2, span=False) == [1, 3]
    assert imp.select_units(torch.tensor([4.0, 0.1, 3.0]), 3, span=True) == [1, 2, 3]


def test_unit_io_is_the_residual_stream():
    model, _ = make_tiny("llama", **GQA)
    ad = adapter_for(model)
    ids = _calibration().input_ids
    blocks = list(imp.stream_unit_io(model, ad, ids, "block", batch_size=2))
    attn = list(imp.stream_unit_io(model, ad, ids, "attn", batch_size=2))
    mlp = list(imp.stream_unit_io(model, ad, ids, "mlp", batch_size=2))
    for i in range(4):
        assert torch.equal(attn[i][0], blocks[i][0])
        assert torch.equal(attn[i][1], mlp[i][0])
        assert torch.allclose(mlp[i][1], blocks[i][1], atol=1e-6)
        if i:
            assert torch.equal(blocks[i][0], blocks[i - 1][1])   # contiguous residual stream
    # the last block's output, after the final norm and head, gives the model's logits
    with torch.no_grad():
        logits = model.lm_head(model.model.norm(blocks[-1][1]))
        assert torch.allclose(logits, model(ids).logits, atol=1e-4)


@pytest.mark.parametrize("unit", ["block", "attn", "mlp"])
def test_temporary_removal_equals_surgery(unit):
    model, _ = make_tiny("llama", **GQA)
    ad = adapter_for(model)
    ids = _calibration().input_ids
    probe = imp.UnitProbe(model, ad, unit, ids, batch_size=2)
    before = probe.loss([])
    with_removed = probe.loss([1, 2])
    assert probe.loss([]) == pytest.approx(before)  # restored
    if unit == "block":
        surgery.drop_blocks(model, ad, [1, 2])
    else:
        for i in (1, 2):
            surgery.drop_sublayer(model, ad, i, unit)
    with torch.no_grad():
        after = float(model(ids, labels=ids).loss)
    assert after == pytest.approx(with_removed, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# depth methods

@pytest.mark.parametrize("metric", sorted(imp.METRICS))
def test_depth_every_metric_removes_k_blocks(metric):
    model, _ = make_tiny("llama", **GQA, num_hidden_layers=6)
    # protected=[]: this checks removal mechanics on 6 blocks, where the Shortened-LLaMA rule would
    # protect all of them (the rule itself is checked in tests/parity/)
    method = build_method("depth", {"metric": metric, "latency_repeats": 0, "shapley_rounds": 1, "protected": []})
    ctx = _ctx(model, Target("depth_50", "blocks", 0.5), calib=method.needs_calibration)
    method.check(model, ctx)
    report = method.prune(model, ctx)
    assert model.config.num_hidden_layers == 3 and len(adapter_for(model).blocks(model)) == 3
    assert report["removed"]["count"] == 3
    scores = torch.tensor(report["importance"]["scores"])
    if report["importance"]["span"]:
        start = report["removed"]["indices"][0]
        assert report["removed"]["indices"] == list(range(start, start + 3))
        assert scores[start] == scores.min()
    else:
        kept = [i for i in range(6) if i not in report["removed"]["indices"]]
        assert scores[report["removed"]["indices"]].max() <= scores[kept].min()
    assert torch.isfinite(model(torch.randint(0, 250, (1, 8))).logits).all()


def test_reverse_removes_the_last_blocks_and_sublayers():
    model, _ = make_tiny("llama", **GQA, num_hidden_layers=6)
    method = build_method("depth", {"metric": "reverse", "latency_repeats": 0})
    report = method.prune(model, _ctx(model, Target("s", "sublayers", count=2, sublayer="mlp"), calib=False))
    assert report["removed"]["indices"] == [4, 5]
    assert model.config.prunebench_dropped_sublayers == {"attn": [], "mlp": [4, 5]}


def test_shortgpt_matches_block_influence_from_captured_states():
    model, _ = make_tiny("llama", **GQA, num_hidden_layers=6)
    ad = adapter_for(model)
    bi = [imp.block_influence(x, y) for x, y in imp.stream_unit_io(model, ad, _calibration().input_ids, "block",
                                                                     batch_size=2)]
    expect = sorted(sorted(range(6), key=lambda i: bi[i])[:2])
    method = build_method("shortgpt", {"latency_repeats": 0})
    report = method.prune(model, _ctx(model, Target("d", "blocks", count=2)))
    assert report["removed"]["indices"] == expect
    assert report["importance"]["scores"] == pytest.approx(bi)


def test_structured_targets_validate():
    with pytest.raises(TargetError):
        Target("x", "blocks")
    with pytest.raises(TargetError):
        Target("x", "sublayers", sublayer="attn")
    with pytest.raises(TargetError):
        Target("x", "width")
    model, _ = make_tiny("llama")
    with pytest.raises(TargetError, match="need 0 < k"):
        build_method("depth", {}).check(model, _ctx(model, Target("x", "blocks", count=4)))
    opt, _ = make_tiny("opt")   # depth works on every layout; width needs resizable q/k/v and MLP
    build_method("depth", {}).check(opt, _ctx(opt, Target("x", "blocks", count=1)))
    with pytest.raises(TargetError, match="width surgery"):
        build_method("minitron", {}).check(opt, _ctx(opt, Target("x", "width", ratio=0.2)))


# ---------------------------------------------------------------------------------------------
# width methods

WIDTH_CASES = [("llm_pruner", {}), ("llm_pruner", {"importance": "vector", "order": "second"}),
               ("llm_pruner", {"mode": "channel"}), ("minitron", {}), ("minitron", {"axes": "heads,mlp,hidden"}),
               ("cce", {}), ("cce", {"compensate": False})]


@pytest.mark.parametrize("name,params", WIDTH_CASES, ids=lambda v: str(v))
def test_width_meets_budget_and_reloads(name, params, tmp_path):
    from transformers import AutoModelForCausalLM

    model, _ = make_tiny("llama", **GQA)
    before = _count(model)
    method = build_method(name, params | {"latency_repeats": 0})
    ctx = _ctx(model, Target("width_30", "width", 0.3))
    method.check(model, ctx)
    report = method.prune(model, ctx)
    plan = report["width_plan"]
    assert _count(model) == plan["params_after"] == surgery.llama_param_count(model.config)
    assert plan["params_before"] == before
    # tiny widths move in coarse steps (hidden: 6 channels of 48 = 12.5% of the model)
    assert abs(1 - _count(model) / before - 0.3) < (0.07 if params.get("mode") == "channel" else 0.02)
    n_q, n_kv, _ = surgery.head_layout(model.config)
    assert n_q % n_kv == 0 and n_q // n_kv == plan["q_per_group"]
    model.save_pretrained(tmp_path, safe_serialization=True)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids = torch.randint(0, 250, (1, 12))
    with torch.no_grad():
        assert (back(ids).logits - model(ids).logits).abs().max() < 1e-5
    out = back.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True, pad_token_id=0)
    assert out.shape == (1, 15)


def test_plan_width_hits_smollm2_budgets_exactly_enough():
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True)
    assert surgery.llama_param_count(cfg) == 134_515_008   # SmolLM2-135M's measured count
    for ratio in (0.2, 0.3):
        for axes in (("heads", "mlp"), ("hidden",), ("mlp", "hidden")):
            plan = plan_width(cfg, ratio, axes)
            assert abs(plan.describe()["ratio_removed"] - ratio) < 4e-3
            assert plan.hidden % (plan.q_per_group * (plan.kv_groups or 3)) == 0
    assert plan_width(cfg, 0.2, ("heads", "mlp"), heads="query").q_per_group == 2
    assert plan_width(cfg, 0.2, ("heads", "mlp")).kv_groups == 2      # default: whole KV groups


def test_minitron_prunes_dead_units_first():
    model, _ = make_tiny("llama", **GQA)
    ad = adapter_for(model)
    blk = ad.blocks(model)[0]
    with torch.no_grad():
        blk.mlp.up_proj.weight[5] = 0          # neuron 5 of block 0 never fires
        blk.self_attn.v_proj.weight[:8] = 0    # KV group 0 carries zero values: heads 0-2 output 0
    method = build_method("minitron", {"axes": "mlp", "latency_repeats": 0})
    from methods.minitron import activation_scores

    heads, mlp, _ = activation_scores(model, ad, _calibration().input_ids, 2, "cpu")
    assert mlp[0, 5] == 0 and (mlp[0] > 0).sum() == mlp.shape[1] - 1
    assert torch.all(heads[0, :3] == 0) and torch.all(heads[0, 3:] > 0)
    method.prune(model, _ctx(model, Target("w", "width", 0.05)))
    assert model.config.intermediate_size < 128
    assert (ad.blocks(model)[0].mlp.up_proj.weight.abs().sum(1) > 0).all()  # the dead neuron went


def test_llm_pruner_element_vs_vector_reduction():
    from methods.llm_pruner import _reduce

    s = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    assert torch.equal(_reduce(s, 0, vector=False), torch.tensor([2.0, 2.5]))
    assert torch.equal(_reduce(s, 0, vector=True), torch.tensor([0.0, 2.5]))
    assert torch.equal(_reduce(s, 1, vector=False), torch.tensor([3.0, 1.5]))


def test_structured_methods_are_registered_with_configs():
    from harness.config import CONF_DIR

    names = {n for n in available() if issubclass(get_method_class(n), StructuredMethod)}
    assert names >= {"depth", "shortgpt", "llm_pruner", "minitron"}
    for n in names:
        assert (CONF_DIR / "method" / f"{n}.yaml").is_file()
        d = build_method(n, {}).describe()
        assert d["paper"] and (d["reference"] or d["fidelity"] == "reconstructed") and d["differences"]


# ---------------------------------------------------------------------------------------------
# through the harness: records hold params before/after, removed units, latency

@pytest.mark.parametrize("method,target", [("shortgpt", "depth_blocks_8"), ("depth", "sublayers_attn_8"),
                                           ("llm_pruner", "width_20")])
def test_run_experiment_records_structured_fields(method, target, results_dir, data_dir):
    from harness.config import compose_config
    from harness.run import run_experiment

    cfg = compose_config([f"method={method}", f"target={target}", "model=tiny-llama", "runtime.threads=1",
                          f"paths.results_dir={results_dir}", "eval.ppl.max_windows=1", "eval.ppl.seq_len=128",
                          "calib.n_samples=4", "calib.seq_len=64", "model.source.config.num_hidden_layers=10",
                          "++method.params.latency_repeats=1"])
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]
    m = rec["measured"]
    assert m["params_after"] < m["params_before"]
    rep = rec["prune_report"]
    assert rep["removed"]
    assert rep["latency"]["before"]["median_s"] > 0 and rep["latency"]["after"]["protocol"]["name"] == "prefill_cpu"
    if target == "width_20":
        assert m["params_after"] == rep["width_plan"]["params_after"]
    else:
        assert rep["removed"]["count"] == 8
    assert math.isfinite(rec["metrics"]["ppl"]["wikitext2"]["value"])


@pytest.mark.slow
@pytest.mark.parametrize("method,params,target", [
    ("depth", {"metric": "reverse"}, Target("depth_25", "blocks", 0.25)),
    ("depth", {"metric": "reverse"}, Target("sublayers_attn_8", "sublayers", count=8, sublayer="attn")),
    ("minitron", {}, Target("width_20", "width", 0.2)),
], ids=["blocks", "attn", "minitron"])  # llm_pruner shares minitron's surgery path (tiny tests cover it)
def test_smollm2_pruned_models_reload(smollm2, method, params, target, tmp_path):
    """The real model: pruned with each kind of surgery, saved, reloaded (from_pretrained, or
    load_pruned for dropped sublayers), same logits, generates with a KV cache."""
    import copy

    from transformers import AutoModelForCausalLM

    model = copy.deepcopy(smollm2.model)
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    calib = _calibration(n=2, seq=32, vocab=49152)
    ctx = PruneContext(adapter=adapter_for(model), target=target, calibration=calib, device="cpu",
                       allocator=build_allocator("uniform"), batch_size=1)
    m = build_method(method, params | {"latency_repeats": 0})
    m.check(model, ctx)
    m.prune(model, ctx)
    model.save_pretrained(tmp_path, safe_serialization=True)
    loader = surgery.load_pruned if target.pattern == "sublayers" else (
        lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32))
    back = loader(tmp_path)
    assert _count(back) == _count(model) < 134_515_008
    with torch.no_grad():
        assert (back(ids).logits - model(ids).logits).abs().max() < 1e-4
    out = back.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True,
                        pad_token_id=smollm2.tokenizer.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 4
