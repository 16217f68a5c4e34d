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
    assert logged["history"][0]["metrics/ppl/wikitext2/value"] == ppl
    assert logged["summary"]["measured/sparsity_blocks"] == record["measured"]["sparsity_blocks"]
    assert logged["summary"]["timing/prune_s"] == record["timing"]["prune_s"]
    assert logged["summary"]["timing/total_s"] == record["timing"]["total_s"]
    assert logged["config"]["run_id"] == record["run_id"]
    assert logged["config"]["config"]["method"]["name"] == "magnitude"
    assert logged["config"]["method"]["tags"]["type"] == "Un/Semi-structured"   # the paper's tags
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
