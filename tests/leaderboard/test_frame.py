"""Aggregation, tables and plots on real tiny-model records (plus records with extra metrics)."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from harness.leaderboard import plots, tables
from harness.leaderboard.frame import cells_frame, flatten_metrics, runs_frame, status_counts
from harness.leaderboard.load import load_records
from tests.leaderboard.conftest import failed_variant

PPL = "ppl wikitext2 (sparsegpt-wanda-ppl v1, seq 512, 8 win)"


def _frames(results):
    loaded = load_records(results)
    return loaded, runs_frame(loaded.records, loaded.paths)


def _by(records, method, target, seed):
    return next(r for r in records if r["method"]["name"] == method and r["target"]["name"] == target
                and r["config"]["seed"] == seed)


def test_flatten_names_protocol_and_dense_baseline(tiny_results):
    loaded, f = _frames(tiny_results)
    assert len(loaded.records) == 5 and not loaded.problems
    assert f.metric_columns() == [PPL]
    runs = f.runs.set_index("run_id")
    w0 = _by(loaded.records, "wanda", "unstructured_50", 0)
    d0 = _by(loaded.records, "dense", "none", 0)
    row = runs.loc[w0["run_id"]]
    ppl_w, ppl_d = w0["metrics"]["ppl"]["wikitext2"]["value"], d0["metrics"]["ppl"]["wikitext2"]["value"]
    assert row[PPL] == ppl_w
    # random-init tiny models differ per seed: the baseline is the dense run of the same seed
    assert row[f"{PPL} dense"] == ppl_d
    assert row[f"{PPL} Δ dense"] == pytest.approx(ppl_w - ppl_d)
    assert row[f"{PPL} % dense"] == pytest.approx(100 * ppl_d / ppl_w)
    assert row["group_type"] == "Unstructured" and row["criteria"] == "Weight+Activation"
    assert runs.loc[_by(loaded.records, "wanda", "nm_2_4", 0)["run_id"], "group_type"] == "Semi-structured"
    # no dense run of seed 1: the baseline falls back to the mean over the dense seeds
    assert runs.loc[_by(loaded.records, "wanda", "unstructured_50", 1)["run_id"], f"{PPL} dense"] == ppl_d


def test_seed_mean_std_and_failed_counts(tiny_results, results_copy):
    loaded, _ = _frames(tiny_results)
    w = [_by(loaded.records, "wanda", "unstructured_50", s)["metrics"]["ppl"]["wikitext2"]["value"] for s in (0, 1)]
    failed = failed_variant(_by(loaded.records, "wanda", "unstructured_50", 0))
    (results_copy / "records" / f"{failed['run_id']}.json").write_text(json.dumps(failed))
    _, f = _frames(results_copy)
    cells = cells_frame(f)
    cell = cells[(cells["method"] == "wanda") & (cells["level"] == "50%")].iloc[0]
    assert cell["n_ok"] == 2 and cell["n_failed"] == 1 and cell["seeds"] == "0,1,7"
    assert cell[PPL] == pytest.approx(sum(w) / 2)
    assert cell[f"{PPL} std"] == pytest.approx(pd.Series(w).std(ddof=1))
    assert "out of memory" in cell["errors"]
    counts = status_counts(f).set_index(["method", "level"])
    assert counts.loc[("wanda", "50%"), "failed"] == 1 and counts.loc[("wanda", "50%"), "ok"] == 2
    assert counts.loc[("magnitude", "50%"), "ok"] == 1


def test_tables_grouped_by_type_with_levels_as_columns(tiny_results, tmp_path):
    _, f = _frames(tiny_results)
    cells = cells_frame(f)
    ov = tables.overview(f, cells)
    assert list(ov.frame.columns[:7]) == ["Type", "Method", "Criteria", "Budget", "Data", "Retrain", "Weights"]
    assert list(dict.fromkeys(ov.frame["Type"])) == ["Unstructured", "Semi-structured", "Baseline"]
    assert PPL in ov.frame.columns and f"{PPL} % dense" in ov.frame.columns
    wanda = ov.frame[(ov.frame["Method"] == "wanda") & (ov.frame["Target"] == "50%")].iloc[0]
    assert " ± " in wanda[PPL] and wanda["Runs"] == "2 ok"
    per = {t.name: t for t in tables.by_pattern(f, cells)}
    un = next(t for n, t in per.items() if n.startswith("tiny-llama_unstructured"))
    assert list(un.frame.columns[-2:]) == ["dense", "50%"]
    assert set(un.frame["Method"]) == {"magnitude", "wanda"}
    nm = next(t for n, t in per.items() if n.startswith("tiny-llama_nm"))
    assert list(nm.frame.columns[-1:]) == ["2:4"]
    paths = tables.write(ov, tmp_path)
    assert "| Type" in paths["md"].read_text() and "\\begin{tabular}" in paths["tex"].read_text()
    back = pd.read_csv(paths["csv"])
    assert len(back) == len(ov.frame) and PPL in back.columns


def _with_extra_metrics(record: dict, acc: float, ms: float, kv: float) -> dict:
    """The record as if the zero-shot/latency/KV evaluators had also run (their layout is generic here)."""
    r = copy.deepcopy(record)
    proto = {"protocol": "lm-eval", "protocol_version": "0.4.13", "limit": 100, "num_fewshot": 0}
    r["metrics"]["zeroshot"] = {"boolq": {**proto, "acc": acc, "acc_stderr": 0.01},
                                "arc_easy": {**proto, "acc": acc + 0.1, "acc_norm": acc + 0.05}}
    r["metrics"]["latency"] = {"protocol": "prefill-decode", "protocol_version": "1",
                               "prefill_ms": ms, "prefill_ms_std": 0.5, "decode_ms_per_token": ms / 10}
    r["metrics"]["kv"] = {"protocol": "kv-bytes", "protocol_version": "1", "context_len": 256, "kv_bytes": kv}
    return r


def test_new_metrics_appear_generically_and_plots(tiny_results, tmp_path):
    loaded, f = _frames(tiny_results)
    out = tmp_path / "plots"
    files, notes = plots.make_plots(f, out)
    assert any(p.name.startswith("ppl_vs_sparsity") and p.suffix == ".svg" for p in files)
    assert any(p.suffix == ".png" for p in files)
    assert {n.split(":")[0] for n in notes} == {"mean zero-shot accuracy vs sparsity", "quality vs latency",
                                                "quality vs KV memory"}
    extra = [_with_extra_metrics(r, 0.5 + 0.01 * i, 10.0 + i, 1000.0 * (i + 1)) for i, r in enumerate(loaded.records)]
    values, specs = flatten_metrics(extra[0]["metrics"])
    cols = {s.column: s for s in specs}
    assert "boolq acc (lm-eval v0.4.13, 0-shot, limit 100)" in cols
    assert "arc_easy acc_norm (lm-eval v0.4.13, 0-shot, limit 100)" in cols
    assert not any("stderr" in c and cols[c].headline for c in cols)
    mean = next(c for c in cols if c.startswith("zero-shot mean acc (2 tasks"))
    assert values[mean] == pytest.approx((0.5 + 0.6) / 2)
    assert cols["latency prefill_ms (prefill-decode v1)"].headline
    assert not cols["latency prefill_ms_std (prefill-decode v1)"].headline
    assert cols["kv kv_bytes (kv-bytes v1, context 256)"].group == "kv"
    f2 = runs_frame(extra)
    assert mean in f2.metric_columns("zeroshot") and f"{mean} % dense" in f2.runs
    files, notes = plots.make_plots(f2, tmp_path / "plots2")
    names = {p.name.split("_tiny")[0] for p in files}
    assert names == {"ppl_vs_sparsity", "zeroshot_vs_sparsity", "quality_vs_latency", "quality_vs_kv"}
    assert not notes


def test_pareto_front():
    pts = pd.DataFrame({"x": [1, 2, 3, 4], "y": [5, 3, 4, 1]})
    front = plots._pareto(pts, "x", "y")
    assert front["x"].tolist() == [1, 2, 4]
    assert math.isclose(front["y"].min(), 1)
