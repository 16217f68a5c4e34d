"""`python -m leaderboard`: builds with zero records, and names and skips a corrupt record."""

from __future__ import annotations

from leaderboard.__main__ import main
from leaderboard.load import load_records


def test_zero_records_still_build(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "empty")]) == 0
    out = tmp_path / "empty" / "leaderboard"
    assert (out / "index.html").is_file() and (out / "leaderboard.md").is_file()
    assert "0 records" in capsys.readouterr().out


def test_corrupt_record_is_named_and_skipped(results_copy, capsys):
    records = results_copy / "records"
    n = len(list(records.glob("*.json")))
    (records / "deadbeefdeadbeef.json").write_text('{"run_id": "deadbeefdeadbeef", "status": "ok", ')  # truncated
    (records / "0000000000000000.json").write_text('{"run_id": "0000000000000000"}')                   # no schema
    (records / "badbytes00000000.json").write_bytes(b"\xff\xfe\x00garbage")
    loaded = load_records(results_copy)
    assert len(loaded.records) == n and len(loaded.problems) == 3
    assert main(["--results", str(results_copy)]) == 0
    cap = capsys.readouterr()
    for name in ("deadbeefdeadbeef.json", "0000000000000000.json", "badbytes00000000.json"):
        assert name in cap.err
    assert f"{n} records, {n - 1} cells, 3 skipped" in cap.out   # wanda 50%: two seeds, one cell
    out = results_copy / "leaderboard"
    index = (out / "index.html").read_text()
    assert "deadbeefdeadbeef.json" in index and "Skipped record files" in index
    assert "deadbeefdeadbeef.json" in (out / "leaderboard.md").read_text()
    assert len(list((out / "runs").glob("*.html"))) == n
    for f in ("runs.csv", "cells.csv", "tables/overview.md", "tables/overview.csv", "tables/overview.tex"):
        assert (out / f).is_file(), f
    assert list((out / "plots").glob("ppl_vs_sparsity*.png")) and list((out / "plots").glob("ppl_vs_sparsity*.svg"))


def test_strings_from_records_are_escaped(results_copy):
    import json

    path = next((results_copy / "records").glob("*.json"))
    record = json.loads(path.read_text())
    evil = '<script>alert("x")</script>'
    record["method"]["differences"] = evil
    record["method"]["reference"] = "javascript:alert(1)"
    record["model"]["name"] = evil
    path.write_text(json.dumps(record))
    assert main(["--results", str(results_copy)]) == 0
    out = results_copy / "leaderboard"
    pages = [out / "index.html", out / "runs" / f"{record['run_id']}.html",
             out / "methods" / f"{record['method']['name']}.html"]
    for page in pages:
        text = page.read_text()
        assert evil not in text and "&lt;script&gt;" in text, page
        assert 'href="javascript:' not in text


def _warnings_section(index: str) -> str:
    start = index.index('<div class="warnings" id="warnings">')
    return index[start:index.index("</div>", start)]


def test_integrity_warnings_are_listed_on_the_page(results_copy, capsys):
    import json
    import shutil

    records = results_copy / "records"
    assert main(["--results", str(results_copy)]) == 0
    assert "None: every record file was read" in _warnings_section((results_copy / "leaderboard" / "index.html").read_text())

    files = sorted(records.glob("*.json"))
    (records / "trunc<script>.json").write_text('{"run_id": "trunc", "status": "ok", ')           # corrupt JSON
    old = json.loads(files[0].read_text())
    old["schema_version"] = "0"                                                                    # fails validation
    (records / "oldschema0000000.json").write_text(json.dumps(old))
    shutil.copy(files[1], records / "copy-of-a-run.json")                                          # duplicate run_id
    bad = json.loads(files[2].read_text())
    bad["metrics"]["ppl"]["wikitext2"]["value"] = 0.5                                              # impossible ppl
    bad["config"]["seed"] = str(bad["config"]["seed"])                                            # "0": coerced
    files[2].write_text(json.dumps(bad))

    assert main(["--results", str(results_copy)]) == 0
    capsys.readouterr()
    out = results_copy / "leaderboard"
    section = _warnings_section((out / "index.html").read_text())
    assert "trunc&lt;script&gt;.json" in section and "<script>" not in section
    assert "oldschema0000000.json" in section and "schema_version 0 is not one this code reads" in section
    assert f"duplicate run_id {json.loads(files[1].read_text())['run_id']}" in section
    assert f"{files[2].name}: metrics.ppl.wikitext2.value=0.5 is impossible" in section
    assert f"{files[2].name}: config.seed=&#x27;{bad['config']['seed']}&#x27; is not an integer; coerced" in section
    assert "Skipped record files (3)" in section and "Record fields and values (2)" in section
    assert str(results_copy.parent) not in section   # files named from the results dir, no machine path
    md = (out / "leaderboard.md").read_text()
    warn_md = md[md.index("\n## Warnings"):md.index("\n## ", md.index("\n## Warnings") + 3)]
    for text in ("trunc<script>.json", "oldschema0000000.json", "copy-of-a-run.json", "value=0.5 is impossible"):
        assert text in warn_md, text
    assert str(results_copy.parent) not in md
