"""harness.evaluate: a saved pruned model evaluated again without calibration or pruning, written as
a linked record (same pruning_id, new run_id)."""

from __future__ import annotations

import json
import logging

import pytest


def _prune(tmp_path, *extra):
    from harness.config import compose_config
    from harness.run import run_experiment

    return run_experiment(compose_config(["model=tiny-llama", "method=wanda", "target=nm_2_4", "runtime.threads=1",
                                          f"paths.results_dir={tmp_path}", "eval.ppl.max_windows=2", *extra]))


def test_saved_model_is_evaluated_without_pruning(tmp_path, data_dir, caplog):
    from harness.evaluate import evaluate

    source = _prune(tmp_path, "output.save_model=true")
    assert source["status"] == "ok"
    rec_path = tmp_path / "records" / f"{source['run_id']}.json"
    with caplog.at_level(logging.INFO):
        linked = evaluate(rec_path, ["eval=quick", "eval.ppl.max_windows=2", "eval.ppl.batch_size=2"])
    stages = [r.getMessage() for r in caplog.records if r.name == "prunebench.progress" and r.getMessage().startswith("stage")]
    assert stages == ["stage load", "stage measure", "stage evaluate"]
    assert not any("calibration" in r.getMessage().lower() or "prune" in r.getMessage() for r in caplog.records
                   if r.name.startswith("prunebench") and "record" not in r.getMessage())
    assert linked["status"] == "ok" and linked["run_id"] != source["run_id"]
    assert linked["pruning_id"] == source["pruning_id"]
    assert linked["evaluated_from"] == {"run_id": source["run_id"], "model_dir": source["output"]["model_dir"]}
    assert linked["measured"]["sparsity_blocks"] == source["measured"]["sparsity_blocks"]
    assert linked["measured"]["nm_check"]["violations"] == 0
    # the saved model is the pruned model: the same windows give the same perplexity
    assert linked["metrics"]["ppl"]["wikitext2"]["value"] == pytest.approx(
        source["metrics"]["ppl"]["wikitext2"]["value"], rel=1e-5)
    on_disk = json.loads((tmp_path / "records" / f"{linked['run_id']}.json").read_text())
    assert on_disk["pruning_id"] == source["pruning_id"] and "calibrate_s" not in on_disk["timing"]
    # the saved directory works as the argument too (same config: the record above is reused)
    assert evaluate(source["output"]["model_dir"], ["eval=quick", "eval.ppl.max_windows=2",
                                                    "eval.ppl.batch_size=2"])["run_id"] == linked["run_id"]


def test_unsaved_run_is_pruned_again_and_saved(tmp_path, data_dir, caplog):
    from harness.evaluate import evaluate

    source = _prune(tmp_path)
    with caplog.at_level(logging.WARNING):
        linked = evaluate(tmp_path / "records" / f"{source['run_id']}.json", ["eval=quick", "eval.ppl.max_windows=1"])
    assert "pruning again" in caplog.text
    assert linked["status"] == "ok" and linked["pruning_id"] == source["pruning_id"]
    assert (tmp_path / "models" / linked["run_id"] / "pruning_metadata.json").is_file()


def test_bad_inputs_are_one_line(tmp_path, capsys):
    from harness.evaluate import main

    assert main([str(tmp_path / "nope.json"), "eval=quick"]) == 2
    assert main(["--help"]) == 0
    out = capsys.readouterr()
    assert "no such record" in out.err and "usage: python -m harness.evaluate" in out.out
