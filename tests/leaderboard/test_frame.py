"""The board built from real committed records of every evaluator (tests/leaderboard/fixtures: files
copied unchanged from runs), plus real tiny-model records for the seed statistics. Every expected
number below is read from the record files themselves."""

from __future__ import annotations

import filecmp
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from leaderboard import plots, published, tables
from leaderboard.frame import cells_frame, runs_frame, status_counts
from leaderboard.load import load_records
from tests.leaderboard.conftest import failed_variant

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PPL = "ppl wikitext2 (sparsegpt-wanda-ppl v1, seq 512, 8 win)"


def _rec(set_name: str, run_id: str) -> dict:
    return json.loads((FIXTURES / set_name / "records" / f"{run_id}.json").read_text())


@pytest.fixture(scope="module")
def board():
    loaded = load_records(FIXTURES)
    frames = runs_frame(loaded.records, loaded.paths, loaded.sets)
    return loaded, frames, cells_frame(frames)


def _cell(cells, run_id):
    return cells[cells["run_ids"].str.contains(run_id)].iloc[0]


def test_every_record_is_its_own_cell_and_nothing_is_averaged(board):
    loaded, frames, cells = board
    assert not loaded.problems and len(loaded.records) == len(list(FIXTURES.rglob("records/*.json")))
    assert len(cells) == len(loaded.records)          # every fixture is a distinct configuration
    assert (cells["n_seeds"] == 1).all() and set(cells["seeds"]) == {"0"}
    ov = tables.overview(frames, cells).frame
    assert set(ov["Seeds"]) == {"1 (seed 0)"}            # not "0" for a run with seed 0
    # RIA 2:4 with and without channel permutation: two rows, each with its own number
    perm, plain = _rec("ppl", "28c17c8245e00acb"), _rec("ppl", "6d001bef41d508e1")
    nm = next(t for t in tables.by_pattern(frames, cells) if t.name.startswith("smollm2-135m_nm_ppl"))
    ria = nm.frame[nm.frame["Method"] == "ria"].set_index("Variant")
    assert ria.loc["permute=True", "2:4"] == tables.fmt_value(perm["metrics"]["ppl"]["wikitext2"]["value"])
    assert ria.loc["permute=False", "2:4"] == tables.fmt_value(plain["metrics"]["ppl"]["wikitext2"]["value"])
    assert "±" not in " ".join(nm.frame.astype(str).values.ravel())


def test_latency_is_read_as_the_evaluator_writes_it(board):
    _, frames, cells = board
    rec = _rec("latency", "e66d2527bb02fc49")["metrics"]["latency"]
    lat = tables.latency(frames, cells)[0].frame.set_index("run_ids")
    row = lat.loc["e66d2527bb02fc49"]
    assert row["prefill ms b1x128"] == tables.fmt_value(1000 * rec["prefill"][0]["seconds"]["median"])
    assert row["decode ms/token b4 (prompt 128)"] == tables.fmt_value(rec["decode"][1]["ms_per_token"]["median"])
    assert row["kernel path"] == rec["kernel_path"]
    # the perplexity beside it is the demo's ppl run of the same pruned model (wanda 2:4, same config)
    assert row[PPL] == tables.fmt_value(_rec("ppl", "5aef7a9c609fce9d")["metrics"]["ppl"]["wikitext2"]["value"])


def test_zeroshot_one_table_tasks_as_columns_with_stderr_and_mean(board):
    _, frames, cells = board
    # dense ran at limit 50, wanda at limit 20: two protocols, two tables, never one column
    by_limit = {t.title.split("limit ")[1].split(",")[0]: t for t in tables.zeroshot(frames, cells)}
    assert set(by_limit) == {"20", "50"}
    zs = by_limit["20"]
    rec = _rec("zeroshot", "244638a8ca1caab5")["metrics"]["zeroshot"]
    assert "lm-eval 0.4.13" in zs.title
    row = zs.frame.set_index("run_ids").loc["244638a8ca1caab5"]
    for task, d in rec["tasks"].items():
        assert row[f"{task} acc"] == tables.fmt_value(100 * d["acc"], 100 * d["acc_stderr"])
    accs = [d["acc"] for d in rec["tasks"].values()]
    assert row["mean acc"] == tables.fmt_value(100 * sum(accs) / len(accs))
    assert len(zs.frame) == 1 and len(by_limit["50"].frame) == 1


def test_kv_rows_are_labelled_by_policy(board):
    _, frames, cells = board
    (kv,) = tables.kv(frames, cells)
    policies = dict(zip(kv.frame["run_ids"], kv.frame["KV policy"]))
    assert policies["bda6b8ebf3eae4c7"] == "h2o (budget 0.2, window 32)"
    assert policies["171b1a571f8a0baa"] == "none (full cache)"
    h2o = _rec("kv", "bda6b8ebf3eae4c7")["metrics"]["kv_memory"]
    mib = next(c for c in kv.frame.columns if c.startswith("KV MiB") and "%" not in c)
    assert kv.frame.set_index("run_ids").loc["bda6b8ebf3eae4c7", mib] == tables.fmt_value(h2o["kv_bytes_measured"] / 2**20)


def test_run_tags_follow_what_ran_and_structured_counts_parameters(board):
    _, frames, cells = board
    lora = _cell(cells, "2c752a6fa8735aa0")
    assert (lora["retrain"], lora["weights"], lora["group_type"]) == ("Efficient-LoRA", "Update", "Unstructured")
    plain = _cell(cells, "f81c2adbac41efe5")
    assert (plain["retrain"], plain["weights"]) == ("Without", "Frozen")
    assert _cell(cells, "5aef7a9c609fce9d")["group_type"] == "Semi-structured"
    width = _rec("structured", "09500b78f4590dc1")["measured"]
    c = _cell(cells, "09500b78f4590dc1")
    assert c["params_removed"] == pytest.approx(1 - width["params_after"] / width["params_before"])
    ov = tables.overview(frames, cells).frame.set_index("run_ids")
    assert ov.loc["09500b78f4590dc1", "Removed"] == f"{100 * c['params_removed']:.1f}% params"
    taylor, angular = ov.loc[["a4c24b9662c8be24", "ceb1f478fa1ae137"], "Variant"].tolist()
    assert "metric=taylor" in taylor.split() and "metric=angular" in angular.split()


def test_coverage_lists_every_method_and_kv_policy_and_the_lists_missing_papers(board, data_dir):
    from harness.kv import POLICIES
    from methods.registry import available

    _, frames, cells = board
    listed = json.loads((data_dir / "awesome-llms-pruning" / "tags.json").read_text())
    cov, missing = tables.coverage(frames, cells, listed)
    assert list(cov.frame["Method"]) == available() + POLICIES.names()
    assert list(cov.frame["Axis"]) == ["method"] * len(available()) + ["kv"] * len(POLICIES)
    cells_of = dict(zip(cov.frame["Method"], cov.frame["Cells"]))
    # h2o's cell is the run under kv=h2o (its method: dense)
    assert cells_of["h2o"] == 1 and cells_of["magnitude_global"] == "no result yet"
    assert "Puzzle: Distillation-Based NAS for Inference-Optimized LLMs" in set(missing.frame["Paper"])
    assert not ({"https://arxiv.org/abs/2306.11695", "https://arxiv.org/abs/2310.05175"} & set(missing.frame["Link"]))
    assert set(missing.frame["Status"]) == {"not implemented"}


def test_published_numbers_only_beside_the_same_model_and_protocol(board):
    loaded, _, _ = board
    dense = _rec("ppl", "7f427019d00965f1")["metrics"]["ppl"]["wikitext2"]  # full test set, seq 2048
    entries = [{"paper": "P", "arxiv": "0000.00000", "table": "Table 1", "model": "smollm2-135m",
                "protocol": f"wikitext2-ppl-{dense['seq_len']}", "metric": "ppl", "method": "dense", "target": "none",
                "value": 20.0},
               {"paper": "P", "arxiv": "0000.00000", "table": "Table 1", "model": "smollm2-135m",
                "protocol": "wikitext2-ppl-512", "metric": "ppl", "method": "wanda", "target": "unstructured_50",
                "value": 70.0},   # prunebench's wanda runs cap the windows (8): not this protocol
               *published.load_published()]
    vs, reported = published.tables(loaded.records, entries)
    assert len(vs.frame) == 1 and vs.frame.iloc[0]["prunebench"] == tables.fmt_value(dense["value"])
    assert vs.frame.iloc[0]["run_ids"] == "7f427019d00965f1"
    assert len(reported.frame) == len(entries) - 1 and "Wanda Table 3 (arXiv:2306.11695)" in set(reported.frame["Source"])


def test_rebuild_is_byte_identical(tmp_path):
    from leaderboard.__main__ import build

    a, b = build(FIXTURES, tmp_path / "a"), build(FIXTURES, tmp_path / "b")
    files = sorted(p.relative_to(a.out_dir) for p in a.out_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.out_dir) for p in b.out_dir.rglob("*") if p.is_file())
    assert any(f.suffix == ".svg" for f in files) and any(f.suffix == ".png" for f in files)
    diff = [f for f in files if not filecmp.cmp(a.out_dir / f, b.out_dir / f, shallow=False)]
    assert not diff, diff
    for f in files:
        if f.suffix in (".html", ".svg", ".md", ".csv"):
            text = (a.out_dir / f).read_text(encoding="utf-8")
            assert str(tmp_path) not in text and str(FIXTURES) not in text, f
    svg = next((a.out_dir / f).read_text() for f in files if f.suffix == ".svg")
    assert "<dc:date>" not in svg


def test_plots_of_every_kind_from_real_records(board, tmp_path):
    _, frames, cells = board
    files, notes = plots.make_plots(frames, tmp_path, cells)
    kinds = {p.name.split("_smollm2")[0].split("_lm-eval")[0] for p in files if p.suffix == ".svg"}
    assert {"ppl_vs_sparsity", "ppl_vs_removed", "depth_metrics", "recovery", "quality_vs_latency",
            "zeroshot_bars"} <= kinds, (kinds, notes)


def test_seed_mean_std_and_failed_counts(tiny_results, results_copy):
    loaded = load_records(tiny_results)
    w = [r["metrics"]["ppl"]["wikitext2"]["value"] for r in loaded.records
         if r["method"]["name"] == "wanda" and r["target"]["name"] == "unstructured_50"]
    failed = failed_variant(next(r for r in loaded.records if r["method"]["name"] == "wanda"
                                 and r["target"]["name"] == "unstructured_50" and r["config"]["seed"] == 0))
    (results_copy / "records" / f"{failed['run_id']}.json").write_text(json.dumps(failed))
    loaded = load_records(results_copy)
    f = runs_frame(loaded.records, loaded.paths, loaded.sets)
    cells = cells_frame(f)
    cell = cells[(cells["method"] == "wanda") & (cells["level"] == "50%")].iloc[0]
    assert cell["n_ok"] == 2 and cell["n_failed"] == 1 and cell["seeds"] == "0,1,7" and cell["n_seeds"] == 2
    assert cell[PPL] == pytest.approx(sum(w) / 2)
    assert cell[f"{PPL} std"] == pytest.approx(pd.Series(w).std(ddof=1))
    assert "out of memory" in cell["errors"]
    ov = tables.overview(f, cells).frame
    assert " ± " in ov[(ov["Method"] == "wanda") & (ov["Target"] == "50%")].iloc[0][PPL]
    counts = status_counts(f).set_index(["method", "level"])
    assert counts.loc[("wanda", "50%"), "failed"] == 1 and counts.loc[("wanda", "50%"), "ok"] == 2


def test_pareto_front():
    pts = pd.DataFrame({"x": [1, 2, 3, 4], "y": [5, 3, 4, 1]})
    front = plots._pareto(pts, "x", "y")
    assert front["x"].tolist() == [1, 2, 4]
    assert math.isclose(front["y"].min(), 1)
