"""A cell's data identity is the record's own provenance (the sha256 of the files the run read), not
hashes recomputed from its config against whatever data this machine holds today."""

from __future__ import annotations

import copy
import json
import shutil

from harness.identity import data_files
from leaderboard.frame import runs_frame
from leaderboard.load import load_records


def _changed_data_dir(data_dir, dst):
    """A data dir like the shared one whose WikiText-2 test file differs (another machine's copy)."""
    dst.mkdir()
    for entry in data_dir.iterdir():
        if entry.name != "wikitext-2-raw-v1":
            (dst / entry.name).symlink_to(entry)
    shutil.copytree(data_dir / "wikitext-2-raw-v1", dst / "wikitext-2-raw-v1")
    with open(dst / "wikitext-2-raw-v1" / "wiki.test.raw", "a", encoding="utf-8") as f:
        f.write("\n = A line this machine's copy has = \n")
    return dst


def _cells(results):
    loaded = load_records(results)
    runs = runs_frame(loaded.records, loaded.paths, loaded.sets).runs
    return dict(zip(runs["run_id"], runs["cell_id"])), loaded.records


def test_cell_id_reads_the_recorded_data_hashes(results_copy, data_dir, tmp_path, monkeypatch):
    here, records = _cells(results_copy)
    wanda = sorted((r for r in records if r["method"]["name"] == "wanda" and r["target"]["name"] == "unstructured_50"),
                   key=lambda r: r["config"]["seed"])
    assert len(wanda) == 2 and here[wanda[0]["run_id"]] == here[wanda[1]["run_id"]]   # two seeds, one cell
    recorded = wanda[0]["provenance"]["data_sha256"]
    assert recorded["eval:wikitext2/test"] and recorded["calib:c4/train"]

    monkeypatch.setenv("PRUNEBENCH_DATA_DIR", str(_changed_data_dir(data_dir, tmp_path / "data")))
    recomputed = data_files(wanda[0]["config"])
    # the premise: hashed from the config on this "machine", the eval file is not the one the run read
    assert recomputed["eval:wikitext2/test"] != recorded["eval:wikitext2/test"]
    there, _ = _cells(results_copy)
    assert there == here


def _wanda_50(records_dir):
    records = (json.loads(p.read_text()) for p in records_dir.glob("*.json"))
    return sorted((r for r in records if r["method"]["name"] == "wanda" and r["target"]["name"] == "unstructured_50"),
                  key=lambda r: r["config"]["seed"])


def test_other_recorded_data_is_another_cell(results_copy):
    records_dir = results_copy / "records"
    seed0, seed1 = _wanda_50(records_dir)
    assert _cells(results_copy)[0][seed1["run_id"]] == _cells(results_copy)[0][seed0["run_id"]]
    # seed 1 as it reads had its eval file been another copy of WikiText-2 (the config is unchanged)
    seed1["provenance"]["data_sha256"]["eval:wikitext2/test"] = "0" * 64
    (records_dir / f"{seed1['run_id']}.json").write_text(json.dumps(seed1))
    cells, _ = _cells(results_copy)
    assert cells[seed1["run_id"]] != cells[seed0["run_id"]]


def test_a_run_that_stopped_early_joins_the_cell_its_recorded_data_agrees_with(results_copy):
    from harness.records import run_id_for

    records_dir = results_copy / "records"
    seed0, seed1 = _wanda_50(records_dir)
    # seed 7 stopped after calibration: its provenance has the calibration file only
    stopped = copy.deepcopy(seed0)
    stopped["config"]["seed"] = 7
    stopped.update(run_id=run_id_for(stopped["config"]), status="failed", metrics={}, metric_declarations={},
                   error={"stage": "prune", "type": "RuntimeError", "message": "out of memory", "traceback": ""})
    stopped["provenance"]["data_sha256"] = {k: v for k, v in stopped["provenance"]["data_sha256"].items()
                                            if k.startswith("calib:")}
    (records_dir / f"{stopped['run_id']}.json").write_text(json.dumps(stopped))
    cells, _ = _cells(results_copy)
    assert cells[stopped["run_id"]] == cells[seed0["run_id"]] == cells[seed1["run_id"]]
    # the same run with a calibration file the cell's runs did not read is not theirs
    stopped["provenance"]["data_sha256"]["calib:c4/train"] = "1" * 64
    (records_dir / f"{stopped['run_id']}.json").write_text(json.dumps(stopped))
    cells, _ = _cells(results_copy)
    assert cells[stopped["run_id"]] != cells[seed0["run_id"]]
