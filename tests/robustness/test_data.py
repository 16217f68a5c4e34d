"""Data files: verified against their MANIFEST.json, hashed into the run identity, and the window
count the text implies recorded next to the one evaluated."""

from __future__ import annotations

from harness.records import run_id_for
from harness.run import run_experiment
from tests.robustness.conftest import cli, config_error, first_line, plain, records, tiny


def _edit_one_word(path):
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(" Robert ", " Rupert ", 1), encoding="utf-8")  # same length


def test_edited_eval_file_is_refused_before_the_model_loads(tmp_path, tiny_data):
    _edit_one_word(tiny_data / "wikitext-2-raw-v1" / "wiki.test.raw")
    cfg = tiny(tmp_path, f"paths.data_dir={tiny_data}")
    msg = config_error(cfg)
    assert msg.startswith(f"data file {tiny_data / 'wikitext-2-raw-v1' / 'wiki.test.raw'} does not match "
                          "its manifest: sha256 ")
    assert not (tmp_path / "results" / "records").exists() or not records(tmp_path / "results")


def test_edited_eval_file_cli_is_one_line_exit_2(tmp_path, tiny_data):
    _edit_one_word(tiny_data / "wikitext-2-raw-v1" / "wiki.test.raw")
    proc = cli("model=tiny-llama", "runtime.threads=1", f"paths.data_dir={tiny_data}",
               f"paths.results_dir={tmp_path / 'r'}", f"paths.cache_dir={tmp_path / 'c'}")
    assert proc.returncode == 2
    assert first_line(proc.stderr).startswith("prunebench: config error: data file ")
    assert "does not match its manifest" in first_line(proc.stderr) and "Traceback" not in proc.stderr


def test_truncated_eval_file_is_refused(tmp_path, tiny_data):
    path = tiny_data / "wikitext-2-raw-v1" / "wiki.test.raw"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 10])
    cfg = tiny(tmp_path, f"paths.data_dir={tiny_data}", "eval.ppl.max_windows=null")
    assert config_error(cfg) == (f"data file {path} has {len(data) // 10} bytes, its manifest says {len(data)} "
                                 "(truncated or edited)")


def test_edited_calibration_file_is_refused(tmp_path, tiny_data):
    path = tiny_data / "c4" / "c4-train.00000-of-01024.first1041.text.jsonl"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("the", "tha", 1), encoding="utf-8")
    msg = config_error(tiny(tmp_path, f"paths.data_dir={tiny_data}", "method=wanda", "target=unstructured_50"))
    assert msg.startswith(f"data file {path} does not match its manifest")


def test_data_sha256_is_part_of_the_run_identity(tmp_path, tiny_data):
    # Without a manifest an edited file cannot be refused, but it can never share the clean file's id.
    (tiny_data / "wikitext-2-raw-v1" / "MANIFEST.json").unlink()
    cfg = plain(tiny(tmp_path, f"paths.data_dir={tiny_data}"))
    clean_id = run_id_for(cfg)
    clean = run_experiment(cfg)
    assert clean["status"] == "ok" and clean["run_id"] == clean_id
    _edit_one_word(tiny_data / "wikitext-2-raw-v1" / "wiki.test.raw")
    edited = run_experiment(cfg)
    assert edited["run_id"] != clean_id and edited["status"] == "ok"
    assert (edited["metrics"]["ppl"]["wikitext2"]["data_sha256"]
            != clean["metrics"]["ppl"]["wikitext2"]["data_sha256"])
    assert len(records(tmp_path / "results")) == 2      # the clean record was not reused for the edit


def test_implied_and_evaluated_window_counts_are_recorded(tmp_path):
    rec = run_experiment(tiny(tmp_path, "eval.ppl.max_windows=2"))
    ppl = rec["metrics"]["ppl"]["wikitext2"]
    assert rec["status"] == "ok" and ppl["n_windows"] == 2
    # the byte tokenizer turns the 1.29 MB test text into ~1.29 M tokens: ~10,000 windows of 128
    assert ppl["n_windows_implied"] > 9000
