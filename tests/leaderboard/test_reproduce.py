"""`python -m harness.reproduce`: a tiny Wanda record reproduces bit for bit on CPU; an altered one does not."""

from __future__ import annotations

import json

from harness.reproduce import main
from tests.leaderboard.conftest import read


def _wanda_record(results):
    return next(p for p in sorted((results / "records").glob("*.json"))
                if read(p)["method"]["name"] == "wanda" and read(p)["target"]["name"] == "unstructured_50"
                and read(p)["config"]["seed"] == 0)


def test_wanda_record_reproduces_bit_for_bit(tiny_results, tmp_path, capsys):
    path = _wanda_record(tiny_results)
    assert main([str(path), "--results-dir", str(tmp_path / "re"), "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "0 mismatches -> REPRODUCED" in out and "verdict: BIT-EXACT" in out
    assert "metrics.ppl.wikitext2.value" in out
    new = read(tmp_path / "re" / "records" / path.name)  # same run id: same semantic config
    assert new["metrics"]["ppl"]["wikitext2"]["value"] == read(path)["metrics"]["ppl"]["wikitext2"]["value"]


def test_last_digits_are_within_tolerance_and_name_the_environment(tiny_results, tmp_path, capsys):
    record = read(_wanda_record(tiny_results))
    record["metrics"]["ppl"]["wikitext2"]["value"] *= 1 + 1e-7   # below the documented 1e-4 on perplexity
    record["env"]["libraries"]["transformers"] = "5.23.0"
    altered = tmp_path / "records" / "altered.json"
    altered.parent.mkdir()
    altered.write_text(json.dumps(record))
    assert main([str(altered), "--results-dir", str(tmp_path / "re")]) == 0
    out = capsys.readouterr().out
    assert "verdict: WITHIN TOLERANCE (environment differences that can explain it:" in out
    assert "library transformers: record 5.23.0" in out
    saved = read(tmp_path / "reproductions" / "altered.json")   # shown on the run's leaderboard page
    assert saved["verdict"] == "within tolerance" and "transformers" in saved["environment differences"]


def test_altered_record_reports_mismatch(tiny_results, tmp_path, capsys):
    record = read(_wanda_record(tiny_results))
    true_ppl = record["metrics"]["ppl"]["wikitext2"]["value"]
    record["metrics"]["ppl"]["wikitext2"]["value"] = true_ppl * (1 + 1e-3)   # beyond 1e-4
    record["measured"]["per_layer"]["model.layers.1.mlp.up_proj"] = 0.25
    record["env"]["git"]["sha"] = "0" * 40
    record["env"]["libraries"]["torch"] = "0.0.1"
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(record))
    assert main([str(altered), "--results-dir", str(tmp_path / "re"), "--no-save"]) == 1
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip() and "MISMATCH" in ln}
    assert set(lines) == {"metrics.ppl.wikitext2.value", "measured.per_layer.model.layers.1.mlp.up_proj"}
    assert repr(true_ppl) in lines["metrics.ppl.wikitext2.value"]
    assert "2 mismatches -> NOT REPRODUCED" in out and "verdict: NOT REPRODUCED" in out
    assert "WARNING: code differs: record at git 0000000000000000000000000000000000000000" in out
    assert "WARNING: library torch: record 0.0.1" in out


def test_unreadable_record_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(bad)]) == 2
    assert "cannot rebuild the run" in capsys.readouterr().err
