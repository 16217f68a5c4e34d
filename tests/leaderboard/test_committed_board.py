"""The committed board: built (as CI builds it) from every committed record set under results/,
it has a row for every registered method and KV-cache policy, "not implemented" rows for the list's papers that are
missing, each implemented paper's tags equal to the list's, and the paper-vs-reproduced tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.mark.skipif(not any(RESULTS.rglob("records/*.json")), reason="no committed records under results/")
def test_committed_board(tmp_path, data_dir):
    from harness.kv import POLICIES
    from leaderboard.__main__ import build
    from methods.registry import available, build_method

    b = build(RESULTS, tmp_path / "site")
    # records of a method version the code no longer runs are named, with the version they ran
    stale = [w for w in b.warnings if "not re-run under the current code" in w]
    ran: dict[str, set[str]] = {}
    for path in RESULTS.glob("**/records/*.json"):
        method = json.loads(path.read_text()).get("method") or {}
        ran.setdefault(str(method.get("name")), set()).add(str(method.get("version")))
    for name in available():
        older = ran.get(name, set()) - {str(build_method(name).version)}
        assert any(f" of {name} in " in w for w in stale) == bool(older), name
    assert b.n_records > 0 and not [p for p, why in b.problems if "duplicate" not in why]
    tables = tmp_path / "site" / "tables"
    cov = pd.read_csv(tables / "coverage.csv")
    cards = {"method": build_method, "kv": POLICIES.build}   # coverage's Axis column -> its registry
    assert sorted(cov[cov["Axis"] == "method"]["Method"]) == available()
    assert sorted(cov[cov["Axis"] == "kv"]["Method"]) == POLICIES.names()
    listed = {row["paper"]: row for row in json.loads((data_dir / "awesome-llms-pruning" / "tags.json").read_text())}
    for _, row in cov.iterrows():
        link = cards[row["Axis"]](row["Method"]).paper_entry()[0]
        if link:
            paper = listed[link]
            assert [row[c] for c in ("Type", "Criteria", "Budget", "Data", "Retrain", "Weights")] == \
                [paper[k] for k in ("type", "criteria", "budget", "data", "retrain", "weight")], row["Method"]
    missing = pd.read_csv(tables / "not_implemented.csv")
    assert len(missing) > 0 and set(missing["Status"]) == {"not implemented"}
    assert (tables / "paper_vs_reproduced.csv").is_file() and len(pd.read_csv(tables / "as_reported.csv")) > 0
    from harness.conclusions import load_conclusions, relation_text

    claims = pd.read_csv(tables / "published_conclusions.csv")
    assert list(claims["Checked"]) == [relation_text(c) for c in load_conclusions().claims]
    assert claims["Reproduced on"].str.startswith("smollm2-135m").all()
    assert set(claims["Verdict"].str.split(" (", regex=False).str[0]) <= {"holds", "does not hold", "not run"}
    # the committed SmolLM2 records fail DSnoT's claim; the row carries what the reference code gave there
    dsnot = claims[claims["Checked"] == "dsnot_60 ≤ wanda_60"].iloc[0]
    assert dsnot["Verdict"] == "does not hold" and "prune_DSnoT" in dsnot["Note"]
    assert claims[claims["Checked"] != "dsnot_60 ≤ wanda_60"]["Note"].isna().all()
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Paper vs reproduced" in index and "Published conclusions vs reproduced" in index
    assert "not implemented" in index and "dequantised from the Q4_1" in index
    for name in available() + POLICIES.names():
        assert (tmp_path / "site" / "methods" / f"{name}.html").is_file(), name
