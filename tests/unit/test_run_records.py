"""run_experiment on a tiny model: records, skip-if-ok, failed records naming the stage."""

import json

import pytest

from harness.config import compose_config
from harness.records import record_path
from harness.run import run_experiment

TINY = ["model=tiny-llama", "eval.ppl.max_windows=2", "eval.ppl.seq_len=128", "calib.n_samples=4",
        "calib.seq_len=64", "runtime.threads=1"]


def test_record_fields_and_skip_when_ok(tmp_path):
    cfg = compose_config(TINY + ["method=wanda", "target=unstructured_50", f"paths.results_dir={tmp_path}"])
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]
    path = record_path(tmp_path, rec["run_id"])
    on_disk = json.loads(path.read_text())
    for key in ("schema_version", "run_id", "status", "error", "method", "model", "target", "calibration",
                "measured", "metrics", "timing", "memory", "env", "provenance", "config"):
        assert key in on_disk
    assert on_disk["method"]["name"] == "wanda" and on_disk["method"]["version"]
    assert on_disk["calibration"]["tokens_sha256"] and on_disk["provenance"]["model_sha256"]
    assert on_disk["measured"]["sparsity_blocks"] == pytest.approx(0.5, abs=1e-6)
    ppl = on_disk["metrics"]["ppl"]["wikitext2"]
    assert ppl["protocol"] == "sparsegpt-wanda-ppl" and ppl["n_windows"] == 2 and ppl["seq_len"] == 128
    for key in ("load_s", "calibrate_s", "prune_s", "eval_s", "total_s"):
        assert on_disk["timing"][key] >= 0
    assert on_disk["env"]["libraries"]["torch"] and "sha" in on_disk["env"]["git"]
    assert on_disk["memory"]["peak_rss_bytes"] > 0
    # An identical config with an ok record is skipped: the file is not rewritten.
    mtime = path.stat().st_mtime_ns
    again = run_experiment(cfg)
    assert again["run_id"] == rec["run_id"] and path.stat().st_mtime_ns == mtime


def test_failure_leaves_a_failed_record_naming_the_stage(tmp_path, monkeypatch):
    # The evaluation text turns out shorter than one window: fails at the evaluate stage, after pruning.
    import harness.evaluation.ppl as ppl

    def too_short(*args, **kwargs):
        raise ValueError("text has 10 tokens, fewer than one window of 128")

    monkeypatch.setattr(ppl, "tokenize_windows_counted", too_short)
    cfg = compose_config(TINY + ["method=magnitude", "target=unstructured_50",
                                 f"paths.results_dir={tmp_path}"])
    rec = run_experiment(cfg)
    assert rec["status"] == "failed"
    assert rec["error"]["stage"] == "evaluate" and rec["error"]["type"] == "ValueError"
    on_disk = json.loads(record_path(tmp_path, rec["run_id"]).read_text())
    assert on_disk["status"] == "failed" and on_disk["measured"]["sparsity_blocks"] == pytest.approx(0.5, abs=1e-6)


def test_masked_model_saves_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    from harness.adapters import adapter_for
    from harness.blocks.measure import measure_sparsity

    cfg = compose_config(TINY + ["method=magnitude", "target=nm_2_4", "output.save_model=true",
                                 f"paths.results_dir={tmp_path}"])
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]
    model = AutoModelForCausalLM.from_pretrained(rec["output"]["model_dir"])
    m = measure_sparsity(model, adapter_for(model), 2, 4)
    assert m["nm_check"]["violations"] == 0 and m["nm_check"]["groups"] > 0
