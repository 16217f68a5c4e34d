"""W&B: a run logs its config, tags, metrics and timings offline; a W&B failure never fails a run."""

from __future__ import annotations

import json
import logging

from harness.run import run_experiment
from harness.tracking import offline_runs, read_offline_run
from tests.leaderboard.conftest import tiny_config

FAKE_KEY = "prunebench-test-key-0123456789abcdef0123456789abcdef"


def test_offline_run_holds_config_tags_metrics(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # must never be written anywhere
    results = tmp_path / "results"
    record = run_experiment(tiny_config(results, "magnitude", "unstructured_50", 0, "wandb.mode=offline",
                                        "eval.ppl.max_windows=2"))
    assert record["status"] == "ok"
    (run_dir,) = offline_runs(results, record["run_id"])
    logged = read_offline_run(run_dir)
    ppl = record["metrics"]["ppl"]["wikitext2"]["value"]
    assert logged["summary"]["metrics/ppl/wikitext2/value"] == ppl
    assert logged["history"][-1]["metrics/ppl/wikitext2/value"] == ppl   # the final row
    assert logged["summary"]["measured/sparsity_blocks"] == record["measured"]["sparsity_blocks"]
    assert logged["summary"]["timing/prune_s"] == record["timing"]["prune_s"]
    assert logged["summary"]["timing/total_s"] == record["timing"]["total_s"]
    assert logged["config"]["run_id"] == record["run_id"]
    assert logged["config"]["method.name"] == "magnitude"               # flat config
    assert logged["config"]["target.ratio"] == record["target"]["ratio"]
    assert logged["config"]["pruning_id"] == record["pruning_id"]
    assert not any(isinstance(v, dict) for v in logged["config"].values())
    assert logged["config"]["method.tags.type"] == "Un/Semi-structured"   # the paper's tags
    assert logged["config"]["tags.type"] == "Unstructured"                 # the run's
    # the run's: an unstructured target, no recovery
    assert {"method:magnitude", "target:unstructured_50", "type:Unstructured", "data:Data free",
            "retrain:Without", "weights:Frozen"} <= set(logged["tags"])
    assert record["config"]["wandb"]["mode"] == "offline"
    for f in [*run_dir.rglob("*"), *(results / "records").glob("*.json")]:
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f


def test_wandb_failure_does_not_fail_the_run(tmp_path, data_dir, caplog):
    results = tmp_path / "results"
    with caplog.at_level(logging.WARNING, logger="prunebench.tracking"):
        record = run_experiment(tiny_config(results, "magnitude", "unstructured_50", 0, "wandb.mode=sideways",
                                            "eval.ppl.max_windows=1"))
    assert record["status"] == "ok"
    assert json.loads((results / "records" / f"{record['run_id']}.json").read_text())["status"] == "ok"
    assert "W&B logging failed" in caplog.text and "sideways" in caplog.text
    assert not offline_runs(results)


def test_live_history_group_and_job_type(tmp_path, data_dir):
    """Per-block prune timing and per-step recovery loss are history rows logged while the run works;
    group = the suite, job_type = the stage kind."""
    from harness.tracking import _wandb_file, iter_records

    results = tmp_path / "results"
    record = run_experiment(tiny_config(results, "wanda", "unstructured_50", 0, "wandb.mode=offline",
                                        "eval.ppl.max_windows=1", "recovery=lora", "recovery.steps=3",
                                        "recovery.warmup_steps=0", "recovery.heldout_windows=1",
                                        "+suite.name=tinygrid"))
    assert record["status"] == "ok", record["error"]
    (run_dir,) = offline_runs(results, record["run_id"])
    logged = read_offline_run(run_dir)
    blocks = [h for h in logged["history"] if "prune/block" in h]
    steps = [h for h in logged["history"] if "recovery/step" in h]
    assert [h["prune/block"] for h in blocks] == [1, 2, 3, 4] and all(h["prune/block_s"] > 0 for h in blocks)
    assert [h["recovery/step"] for h in steps] == [1, 2, 3]
    assert [round(h["recovery/loss"], 5) for h in steps] == record["recovery"]["train_loss_curve"]
    run = next(r.run for r in iter_records(_wandb_file(run_dir)) if r.WhichOneof("record_type") == "run")
    assert run.run_group == "tinygrid" and run.job_type == "prune"
