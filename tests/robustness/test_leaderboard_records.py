"""Leaderboard record loading: corrupt files named and skipped, duplicate run_ids keep the newest,
badly typed fields coerced or rejected with a named warning, impossible metric values flagged and
never shown, HTML in a record escaped."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from leaderboard.load import load_records
from harness.run import run_experiment
from tests.robustness.conftest import tiny


@pytest.fixture(scope="module")
def real_records(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lb")
    for extra in (("method=dense",), ("method=magnitude", "target=unstructured_50")):
        assert run_experiment(tiny(tmp, *extra))["status"] == "ok"
    return tmp / "results"


@pytest.fixture
def results(real_records, tmp_path):
    shutil.copytree(real_records / "records", tmp_path / "results" / "records")
    return tmp_path / "results"


def _files(results):
    return sorted((results / "records").glob("*.json"))


def test_duplicate_run_id_keeps_the_newest_and_lists_the_other(results):
    path = _files(results)[1]
    rec = json.loads(path.read_text())
    newer = dict(rec, finished_at="2999-01-01T00:00:00Z")
    newer["metrics"] = json.loads(json.dumps(rec["metrics"]))
    newer["metrics"]["ppl"]["wikitext2"]["value"] += 1.0
    copy = path.with_name("copy-" + path.name)
    copy.write_text(json.dumps(newer))
    loaded = load_records(results)
    assert len(loaded.records) == 2
    kept = next(r for r in loaded.records if r["run_id"] == rec["run_id"])
    assert kept["finished_at"] == "2999-01-01T00:00:00Z"
    assert loaded.duplicates == {rec["run_id"]: [path]}
    assert (path, f"duplicate run_id {rec['run_id']}: kept the newer {copy.name}") in loaded.problems


def test_string_seed_is_coerced_with_a_named_warning(results):
    path = _files(results)[0]
    rec = json.loads(path.read_text())
    rec["config"]["seed"] = "0"
    path.write_text(json.dumps(rec))
    loaded = load_records(results)
    assert len(loaded.records) == 2
    assert f"{path.name}: config.seed='0' is not an integer; coerced to 0" in loaded.warnings


def test_unparseable_seed_rejects_only_that_record(results):
    from leaderboard.__main__ import build

    path = _files(results)[0]
    rec = json.loads(path.read_text())
    rec["config"]["seed"] = "zero"
    path.write_text(json.dumps(rec))
    loaded = load_records(results)
    assert len(loaded.records) == 1
    assert (path, f"{path.name}: config.seed='zero' is not an integer; record rejected") in loaded.problems
    assert build(results).n_records == 1                     # the board still builds


@pytest.mark.parametrize("bad", ["nan", "inf", -3.0, 0.5])
def test_impossible_perplexity_is_flagged_and_not_shown(results, bad):
    path = _files(results)[1]
    rec = json.loads(path.read_text())
    rec["metrics"]["ppl"]["wikitext2"]["value"] = bad
    path.write_text(json.dumps(rec))
    loaded = load_records(results)
    kept = next(r for r in loaded.records if r["run_id"] == rec["run_id"])
    assert kept["metrics"]["ppl"]["wikitext2"]["value"] is None
    assert (f"{path.name}: metrics.ppl.wikitext2.value={bad!r} is impossible (expected a finite number in "
            "[1, inf]); flagged and not shown") in loaded.warnings


def test_check_record_fields_passes_a_real_record_unchanged(real_records):
    from leaderboard.load import check_record_fields

    rec = json.loads(_files(real_records)[0].read_text())
    out, warnings = check_record_fields(json.loads(json.dumps(rec)), "r")
    assert out == rec and warnings == []
    assert math.isfinite(out["metrics"]["ppl"]["wikitext2"]["value"])


def test_corrupt_record_is_named_and_skipped(results):
    path = _files(results)[0]
    path.write_text(path.read_text()[:100])
    loaded = load_records(results)
    assert len(loaded.records) == 1
    [(bad, why)] = loaded.problems
    assert bad == path and why.startswith("JSONDecodeError: ")


def test_html_in_a_record_is_escaped(results):
    from leaderboard.__main__ import build

    path = _files(results)[1]
    rec = json.loads(path.read_text())
    rec["model"]["name"] = "<script>alert(1)</script>"
    path.write_text(json.dumps(rec))
    out = build(results)
    html = "".join(p.read_text() for p in out.out_dir.rglob("*.html"))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
