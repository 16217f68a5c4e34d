"""Published conclusions vs reproduced: the claims of conf/published/conclusions.yaml checked on real
tiny-model records (run here with the benchmark's own overrides), on the built page and by the
benchmark script, which must agree with the page. Every expected figure is read from the record files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.conclusions import FAILS, HOLDS, NOT_RUN, check, check_claims, load_conclusions
from leaderboard.load import load_records

REPO = Path(__file__).resolve().parents[2]
CALIB = "c4_quick"   # the benchmark's --calib: the leaderboard fixture's own calibration, so its runs are cells
# with the fixture's magnitude 50%, wanda 50% (seeds 0 and 1) and wanda 2:4; dsnot_60 is never run
RUN = ("sparsegpt_50", "wanda_4_8", "wanda_60")


def _run(results: Path, overrides: list[str]) -> dict:
    from harness.config import compose_config
    from harness.run import run_experiment

    record = run_experiment(compose_config([*overrides, f"paths.results_dir={results}", "runtime.threads=1",
                                            "wandb.mode=disabled"]))
    assert record["status"] == "ok", record["error"]
    return record


def _spec():
    return load_conclusions(calib=CALIB, model="tiny-llama")


@pytest.fixture(scope="module")
def claim_results(tmp_path_factory, tiny_results, data_dir):
    """<root>/records: the leaderboard fixture's tiny-llama runs plus the other claim cells, run with
    the benchmark's overrides; <root>/other_calib: wanda 50% calibrated on c4_medium (another cell);
    <root>/other_eval: wanda 50% evaluated on 4 windows (another protocol)."""
    from harness.conclusions import run_overrides

    spec = _spec()
    root = tmp_path_factory.mktemp("claims") / "results"
    shutil.copytree(tiny_results / "records", root / "records")
    for name in RUN:
        _run(root, run_overrides(spec, name))
    decoys = [_run(root / "other_calib", [*run_overrides(spec, "wanda_50"), "calib=c4_medium"]),
              _run(root / "other_eval", [*run_overrides(spec, "wanda_50"), "eval.ppl.max_windows=4"])]
    return root, decoys


def _by_cell(root: Path) -> dict[str, list[dict]]:
    """The claim cells' records, found here by reading the files: ok, c4_quick, 8 windows, defaults."""
    spec = _spec()
    out: dict[str, list[dict]] = {}
    for path in sorted((root / "records").glob("*.json")):
        r = json.loads(path.read_text())
        for name, c in spec.cells.items():
            if (r["method"]["name"], r["target"]["name"]) == (c["method"], c["target"]):
                out.setdefault(name, []).append(r)
    return out


def _ppl(records: list[dict]) -> float:
    return sum(r["metrics"]["ppl"]["wikitext2"]["value"] for r in records) / len(records)


def test_claims_on_real_tiny_records(claim_results):
    root, decoys = claim_results
    cells = _by_cell(root)
    assert len(cells["wanda_50"]) == 2 and "dsnot_60" not in cells   # two seeds; DSnoT never ran
    ppl = {name: _ppl(rs) for name, rs in cells.items()}
    results = {res.claim["id"]: res for res in check_claims(load_records(root).records, _spec())}
    assert {res.model for res in results.values()} == {"tiny-llama"}

    dsnot = results["dsnot"]
    assert dsnot.verdict == NOT_RUN and dsnot.missing == ["dsnot_60"]
    assert dsnot.values == {"wanda_60": ppl["wanda_60"]}

    vs = results["vs_magnitude"]
    assert vs.values == pytest.approx({c: ppl[c] for c in ("sparsegpt_50", "magnitude_50", "wanda_50")}, rel=1e-12)
    # on a random-init model pruning barely moves perplexity: nothing is "far better" than magnitude
    assert max(ppl["sparsegpt_50"], ppl["wanda_50"]) >= 0.5 * ppl["magnitude_50"]
    assert vs.verdict == FAILS

    nm = results["nm_order"]
    expected = HOLDS if ppl["wanda_2_4"] > ppl["wanda_4_8"] > ppl["wanda_50"] else FAILS
    assert nm.verdict == expected and not nm.missing
    # the claim cells' own records (both seeds of wanda 50%), not the other calibration nor the 4-window run
    assert nm.run_ids == {c: sorted(r["run_id"] for r in cells[c]) for c in ("wanda_2_4", "wanda_4_8", "wanda_50")}
    used = {rid for res in results.values() for ids in res.run_ids.values() for rid in ids}
    assert not used & {d["run_id"] for d in decoys}


def test_a_record_is_matched_by_its_contents_not_its_file_name(claim_results, tmp_path):
    root, decoys = claim_results
    cells = _by_cell(root)
    dst = tmp_path / "results" / "renamed" / "records"
    dst.mkdir(parents=True)
    for name, rs in cells.items():
        for i, r in enumerate(rs):
            (dst / f"{name}-copy{i}.json").write_text(json.dumps(r))
    results = {res.claim["id"]: res for res in check_claims(load_records(tmp_path / "results").records, _spec())}
    assert results["nm_order"].run_ids["wanda_50"] == sorted(r["run_id"] for r in cells["wanda_50"])
    # the claims' file asks for c4_medium: only the decoy calibrated on it is a wanda 50% cell there
    medium = check_claims(load_records(root).records, load_conclusions(model="tiny-llama"))
    assert {rid for res in medium for ids in res.run_ids.values() for rid in ids} >= {decoys[0]["run_id"]}
    assert all(res.run_ids.get("wanda_50") == [decoys[0]["run_id"]] for res in medium if "wanda_50" in res.run_ids)


def test_a_cell_whose_only_run_failed_is_named_as_failed(claim_results, tmp_path):
    from tests.leaderboard.conftest import failed_variant

    root, _ = claim_results
    ok = _by_cell(root)["wanda_4_8"][0]
    failed = failed_variant(ok)   # what run_experiment writes when the run fails (its config unchanged)
    dst = tmp_path / "results" / "records"
    shutil.copytree(root / "records", dst)
    (dst / f"{ok['run_id']}.json").unlink()
    (dst / f"{failed['run_id']}.json").write_text(json.dumps(failed))
    res = {r.claim["id"]: r for r in check_claims(load_records(tmp_path / "results").records, _spec())}
    assert res["nm_order"].verdict == NOT_RUN and res["nm_order"].failed == {"wanda_4_8": [failed["run_id"]]}
    from leaderboard.published import conclusions_table

    table = conclusions_table(load_records(tmp_path / "results").records, _spec()).frame.set_index("Checked")
    row = table.loc["wanda_2_4 > wanda_4_8 and wanda_4_8 > wanda_50"]
    assert row["Verdict"] == "not run (wanda_4_8 failed (1 run))" and failed["run_id"] in row["run_ids"].split(",")
    assert table.loc["dsnot_60 ≤ wanda_60", "Verdict"] == "not run (no record of dsnot_60)"


def test_each_claim_holds_on_its_papers_own_figures():
    spec = load_conclusions()
    complete = 0
    for claim in spec.claims:
        for figures in claim["paper"]["figures"]:
            verdict, missing = check(claim, figures["values"])
            assert verdict in (HOLDS, NOT_RUN), (claim["id"], figures["model"])
            assert (verdict == NOT_RUN) == bool(missing)
            complete += verdict == HOLDS
    assert complete >= 2   # vs_magnitude on LLaMA-7B and LLaMA-2-7B (4:8 and DSnoT figures are not quoted)


def test_the_page_shows_the_claims_table(claim_results, tmp_path):
    from leaderboard.__main__ import build

    root, _ = claim_results
    cells = _by_cell(root)
    out = tmp_path / "site"
    build(root, out, conclusions=_spec())
    table = pd.read_csv(out / "tables" / "published_conclusions.csv").set_index("Checked")
    assert set(table["Reproduced on"]) == {"tiny-llama"}
    row = table.loc["sparsegpt_50 < 0.5 × magnitude_50 and wanda_50 < 0.5 × magnitude_50"]
    assert row["Verdict"] == FAILS
    assert f"magnitude_50 {_ppl(cells['magnitude_50']):.3f}," in row["Reproduced figures"]
    assert f"wanda_50 {_ppl(cells['wanda_50']):.3f} (mean of 2)" in row["Reproduced figures"]   # two seeds
    assert "LLaMA-7B (wikitext2-ppl-2048): magnitude_50 17.29 (p)" in row["Paper's figures"]
    assert table.loc["dsnot_60 ≤ wanda_60", "Verdict"] == "not run (no record of dsnot_60)"
    index = (out / "index.html").read_text()
    assert "Published conclusions vs reproduced" in index
    assert "The reproduced side is on tiny-llama" in index and "not on the papers&#x27; models" in index
    for rs in cells.values():   # every cell's run is linked to its page
        for r in rs:
            assert f'<a href="runs/{r["run_id"]}.html">' in index and (out / "runs" / f"{r['run_id']}.html").is_file()
    assert "Published conclusions vs reproduced" in (out / "leaderboard.md").read_text()


def test_the_benchmark_prints_the_pages_verdicts(claim_results, tmp_path):
    """The benchmark reuses the ok records (same overrides, same run ids) and checks them with the
    page's code: its verdict and figures are the table's."""
    from leaderboard.__main__ import build

    root, _ = claim_results
    n = len(list((root / "records").glob("*.json")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "published_conclusions.py"), "--model", "tiny-llama",
                          "--calib", CALIB, "--results", str(root), "--only", "vs_magnitude"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines[:3]) == ["magnitude_50", "sparsegpt_50", "wanda_50"]
    assert len(list((root / "records").glob("*.json"))) == n   # nothing re-run
    build(root, tmp_path / "site", conclusions=_spec())
    row = pd.read_csv(tmp_path / "site" / "tables" / "published_conclusions.csv").set_index("Checked").loc[
        "sparsegpt_50 < 0.5 × magnitude_50 and wanda_50 < 0.5 × magnitude_50"]
    assert lines[-1].startswith(row["Verdict"].upper() + " ")
    for figure in row["Reproduced figures"].split(", "):   # "wanda_50 257.034 (mean of 2)" -> "wanda_50=257.034"
        assert figure.split(" (")[0].replace(" ", "=") in lines[-1]
