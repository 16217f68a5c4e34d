"""Where records go: checked writable with room before any work, a fallback location when the final
write fails anyway, never the repository's committed results/ unless asked."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from harness.run import run_experiment
from tests.robustness.conftest import REPO, cli, config_error, first_line, plain, tiny


def _unwritable(tmp_path) -> Path:
    """A results dir this process cannot write (root ignores mode bits: use /proc, which refuses mkdir)."""
    if os.geteuid() == 0:
        return Path("/proc/prunebench-results")
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return path


def test_unwritable_results_dir_is_refused_before_work(tmp_path):
    path = _unwritable(tmp_path)
    msg = config_error(tiny(tmp_path, results=path))
    assert msg.startswith(f"results directory {path} is not writable: ")


def test_unwritable_results_dir_cli_is_one_line(tmp_path):
    path = _unwritable(tmp_path)
    proc = cli("model=tiny-llama", "runtime.threads=1", f"paths.results_dir={path}")
    assert proc.returncode == 2
    assert first_line(proc.stderr).startswith(f"prunebench: config error: results directory {path} is not writable: ")
    assert "Traceback" not in proc.stderr


def test_full_results_dir_is_refused_before_work(tmp_path, monkeypatch):
    import harness.records

    monkeypatch.setattr(harness.records, "MIN_FREE_BYTES", 1 << 62)
    msg = config_error(tiny(tmp_path))
    assert msg.startswith(f"results directory {tmp_path / 'results'} has ") and msg.endswith(
        f"bytes free, fewer than the {1 << 62} a record needs")


def test_failed_final_write_goes_to_the_fallback_location(tmp_path, monkeypatch, capsys):
    import tempfile

    import harness.records

    real = harness.records.write_record
    results = tmp_path / "results"

    def disk_full(results_dir, record, *args, **kwargs):
        if Path(results_dir) == results:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(results_dir, record, *args, **kwargs)

    monkeypatch.setattr(harness.records, "write_record", disk_full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    rec = run_experiment(tiny(tmp_path))
    fallback = tmp_path / "tmp" / "prunebench-records" / "records" / f"{rec['run_id']}.json"
    assert rec["status"] == "ok" and fallback.is_file()
    err = capsys.readouterr().err
    assert f"could not write the record to {results} (No space left on device); written to {fallback}" in err
    assert str(rec["metrics"]["ppl"]["wikitext2"]["value"]) in err


def test_default_results_dir_is_outside_the_repository(tmp_path):
    from harness.config import compose_config
    from harness.validate import validate

    cfg = plain(compose_config(["model=tiny-llama"]))
    assert not Path(cfg["paths"]["results_dir"]).resolve().is_relative_to(REPO)
    cfg["paths"]["results_dir"] = None
    assert not validate(cfg).results_dir.is_relative_to(REPO)
