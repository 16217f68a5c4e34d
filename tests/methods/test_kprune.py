"""KPrune contract on tiny random-init encoders: the FLOPs budget is met on the measured weights,
the pruned model runs, masks and surgery agree, the run record holds accuracy before and after."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.encoders import encoder_flops
from harness.targets import Target, TargetError
from methods.registry import build_method
from tests.unit.test_encoders import _inputs, tiny_encoder

FLOPS_60 = Target("flops_60", "flops", 0.4)
FAST = {"num_tokens": 1500, "max_length": 48, "batch_size": 8}


def _ctx(model, tok, data_dir, target=FLOPS_60):
    return PruneContext(adapter=adapter_for(model), target=target, calibration=None, allocator=None,
                        device="cpu", tokenizer=tok, data_dir=data_dir, seed=0)


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_kprune_meets_the_flops_budget(family, data_dir):
    model, tok = tiny_encoder(family)
    method = build_method("kprune", FAST)
    ctx = _ctx(model, tok, data_dir)
    method.check(model, ctx)
    report = method.prune(model, ctx)
    measured = encoder_flops(model, ctx.adapter, report["flops_accounting"]["seq_len"])
    assert measured["flops"] == report["flops_after"] <= 0.6 * report["flops_before"]
    assert report["flops_ratio"] > 0.5                      # the budget is used, not overshot
    assert measured["heads"] == report["heads"] and sum(report["heads"]) < 8
    assert report["sample"]["split"] == "train" and report["sample"]["n_samples"] > 0
    out = model(**_inputs()).logits
    assert out.shape == (3, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.6])
def test_budget_holds_at_the_papers_constraints(ratio, data_dir):
    model, tok = tiny_encoder("bert", seed=1)
    report = build_method("kprune", FAST).prune(model, _ctx(model, tok, data_dir, Target("f", "flops", ratio)))
    assert report["flops_after"] < (1 - ratio) * report["flops_before"]


def test_kprune_refuses_decoders_and_other_patterns(data_dir):
    from tests.conftest import make_tiny

    model, tok = make_tiny("llama")
    with pytest.raises(TargetError, match="encoder"):
        build_method("kprune").check(model, _ctx(model, tok, data_dir))
    enc, tok = tiny_encoder("bert")
    with pytest.raises(TargetError, match="cannot produce"):
        build_method("kprune").check(enc, _ctx(enc, tok, data_dir, Target("w", "width", 0.2)))


def test_tags_are_the_papers():
    d = build_method("kprune").describe()
    assert d["listed"] == "https://openreview.net/forum?id=s2NjWfaYdZ"
    assert d["tags"]["type"] == "Head/Neuron" and d["tags"]["budget"] == "FLOPs" and d["differences"]


def test_run_record_has_accuracy_before_and_after(tmp_path):
    from harness.config import compose_config
    from harness.run import run_experiment

    cfg = compose_config(["model=enc-tiny-bert", "method=kprune", "target=flops_60", "eval=accuracy_boolq",
                          "eval.accuracy.max_length=48", "method.params.num_tokens=1500",
                          "method.params.max_length=48", "runtime.threads=1", "wandb.mode=disabled",
                          f"paths.results_dir={tmp_path}"])
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]
    before, after = rec["metrics"]["accuracy_dense"]["boolq"], rec["metrics"]["accuracy"]["boolq"]
    assert before["n"] == after["n"] > 500 and before["split"] == after["split"] == "eval"
    assert rec["prune_report"]["flops_ratio"] <= 0.6
    assert rec["tags"]["data"] == "Calibration" and rec["metric_declarations"]["accuracy_dense"]["metrics"][0][
        "headline"] is False
