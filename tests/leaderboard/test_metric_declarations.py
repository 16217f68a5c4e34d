"""Record schema 2: every committed version-1 record is read through harness.records_v1, its
derived metric declarations equal what today's evaluators declare for the same values (so a new
run lands in the same leaderboard columns as the committed ones), the board built from them has the
columns and directions the values imply, and records written now carry their own declarations."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from harness.records import SCHEMA_VERSION, read_record, upgrade_record, validate_record
from leaderboard.frame import runs_frame
from leaderboard.load import load_records, record_files

ROOT = Path(__file__).resolve().parents[2]
RESULT_TREES = [ROOT / "results", ROOT / "tests" / "leaderboard" / "fixtures" / "results"]
COMMITTED = sorted(p for tree in RESULT_TREES for p in tree.rglob("records/*.json"))


def _evaluator_declarations(metrics: dict) -> dict:
    from harness.evaluation import accuracy, kv_memory, kv_ppl, latency, ppl, ppl_prompted, zeroshot
    from harness.run import dense_baseline_declaration

    declare = {"ppl": ppl.declare, "kv_ppl": kv_ppl.declare, "zeroshot": zeroshot.declare,
               "latency": latency.declare, "kv_memory": kv_memory.declare, "accuracy": accuracy.declare,
               "ppl_prompted": ppl_prompted.declare}
    out = {}
    for name, values in metrics.items():
        section = name.removesuffix("_dense")    # `<section>_dense`: the score before pruning
        out[name] = declare[section](values)
        if section != name:
            out[name] = dense_baseline_declaration(out[name])
    return out


def test_committed_records_all_load_as_the_current_version():
    """Version-1 records (most of the committed ones) are upgraded on reading; version-2 records
    (written since) are read as written; the values never change."""
    assert len(COMMITTED) > 90
    versions = set()
    for path in COMMITTED:
        raw = json.loads(path.read_text())
        versions.add(raw["schema_version"])
        record = read_record(path)
        assert record["schema_version"] == SCHEMA_VERSION
        if raw["schema_version"] == "1":
            assert "metric_declarations" not in raw and record["upgraded_from"] == "1", path
        else:
            assert raw["schema_version"] == SCHEMA_VERSION and "upgraded_from" not in record, path
        assert set(record["metric_declarations"]) == set(raw["metrics"]), path
        assert record["metrics"] == raw["metrics"]           # the values are read as they were written
    assert "1" in versions                                   # the v1 reader is exercised on real records


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_v1_reader_declares_what_the_evaluators_declare(path):
    """The key-name rules of the v1 reader and the evaluators' own declarations agree on every
    committed record's values: same names, paths, directions, settings, spreads and means."""
    record = read_record(path)
    assert record["metric_declarations"] == _evaluator_declarations(record["metrics"])


@pytest.fixture(scope="module")
def committed_board():
    out = {}
    for tree in RESULT_TREES:
        loaded = load_records(tree)
        assert len(loaded.records) + len(loaded.problems) == len(record_files(tree))
        assert all("duplicate run_id" in why for _, why in loaded.problems)
        out[tree] = (loaded, runs_frame(loaded.records, loaded.paths, loaded.sets))
    return out


def test_board_columns_hold_the_record_values_and_directions(committed_board):
    from harness.record_schema import lookup

    # stored unit -> column unit, by the column's own wording (independent of the declarations)
    def unit(col):
        return 1000.0 if col.startswith("prefill ms") else 2.0**-20 if col.startswith("KV MiB") else 1.0

    groups = set()
    for loaded, frames in committed_board.values():
        runs = frames.runs.set_index("run_id")
        for record in loaded.records:
            shown = set()
            for col, spec in frames.specs.items():
                got = runs.at[record["run_id"], col]
                if got != got or spec.path[0] == "derived":    # NaN: another protocol's column
                    continue
                raw = lookup(record["metrics"][spec.path[0]], list(spec.path[1:]))
                assert got == float(raw) * unit(col), (record["run_id"], col)
                shown.add(spec.path)
                groups.add(spec.group)
            for ds, d in (record["metrics"].get("ppl") or {}).items():    # every perplexity is on the board
                assert ("ppl", ds, "value") in shown or d["value"] is None, (record["run_id"], ds)
        for col, spec in frames.specs.items():
            # perplexity, latency and KV memory rank low; accuracy ranks high; spreads never rank
            want = {"ppl": True, "kv_ppl": True, "ppl_prompted": True, "latency": True, "kv": True, "zeroshot": False,
                    "accuracy": False}[spec.group]
            spread = col.endswith((" stderr", " iqr"))
            assert spec.lower_is_better is (None if spread else want), col
            assert spec.quality == (spec.group in ("ppl", "kv_ppl", "ppl_prompted", "zeroshot", "accuracy")
                                    and not spread), col
    assert groups == {"ppl", "kv_ppl", "ppl_prompted", "zeroshot", "latency", "kv", "accuracy"}


def test_board_reads_the_committed_perplexity_under_its_protocol(committed_board):
    loaded, frames = committed_board[RESULT_TREES[1]]
    rec = next(r for r in loaded.records if r["run_id"] == "7f427019d00965f1")
    d = rec["metrics"]["ppl"]["wikitext2"]
    col = f"ppl wikitext2 (sparsegpt-wanda-ppl v1, seq {d['seq_len']}, {d['n_windows']} win)"
    assert frames.runs.set_index("run_id").at["7f427019d00965f1", col] == d["value"]
    assert frames.specs[col].lower_is_better is True and frames.specs[col].headline


def test_validation_names_a_broken_declaration():
    record = read_record(next(p for p in COMMITTED if "zeroshot" in json.loads(p.read_text())["metrics"]))
    validate_record(record)
    moved = copy.deepcopy(record)
    moved["metric_declarations"]["zeroshot"]["metrics"][0]["path"] = ["tasks", "no-such-task", "acc"]
    with pytest.raises(ValueError, match="not in metrics.zeroshot"):
        validate_record(moved)
    unranked = copy.deepcopy(record)
    unranked["metric_declarations"]["zeroshot"]["metrics"][0]["higher_is_better"] = "yes"
    with pytest.raises(ValueError, match="higher_is_better"):
        validate_record(unranked)
    undeclared = copy.deepcopy(record)
    undeclared["metric_declarations"].pop("zeroshot")
    with pytest.raises(ValueError, match="no declaration"):
        validate_record(undeclared)
    with pytest.raises(ValueError, match="not one this code reads"):
        upgrade_record({**json.loads(COMMITTED[0].read_text()), "schema_version": "0"})


def test_new_runs_write_version_2_records_the_board_reads(tiny_results):
    path = next(tiny_results.glob("records/*.json"))
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == "2" and "upgraded_from" not in raw
    validate_record(raw)
    decl = raw["metric_declarations"]["ppl"]
    assert decl["protocol"] == raw["metrics"]["ppl"]["wikitext2"]["protocol"]
    assert [m["higher_is_better"] for m in decl["metrics"]] == [False] * len(raw["metrics"]["ppl"])
    loaded = load_records(tiny_results)
    frames = runs_frame(loaded.records, loaded.paths, loaded.sets)
    d = raw["metrics"]["ppl"]["wikitext2"]
    col = f"ppl wikitext2 (sparsegpt-wanda-ppl v1, seq {d['seq_len']}, {d['n_windows']} win)"
    assert frames.runs.set_index("run_id").at[raw["run_id"], col] == d["value"]
    assert frames.specs[col].lower_is_better is True
