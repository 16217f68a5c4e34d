"""An ok record is never replaced: a failing forced re-run keeps its failure beside it, reproduce
writes its re-run elsewhere, a killed or interrupted run leaves no half record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from harness.records import record_path
from harness.run import run_experiment
from tests.robustness.conftest import REPO, TINY, env, tiny


def test_failed_forced_rerun_keeps_the_ok_record(tmp_path, monkeypatch):
    import harness.evaluation.ppl as ppl

    ok = run_experiment(tiny(tmp_path))
    path = record_path(tmp_path / "results", ok["run_id"])
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ppl, "window_nll", boom)
    failed = run_experiment(tiny(tmp_path, "force=true"))
    assert failed["status"] == "failed" and failed["error"]["stage"] == "evaluate"
    assert path.read_bytes() == before                                # the ok record is untouched
    [kept] = (tmp_path / "results" / "failures").glob(f"{ok['run_id']}-*.json")
    assert json.loads(kept.read_text())["error"]["message"] == "CUDA out of memory"


def test_reproduce_into_the_records_own_results_dir_writes_elsewhere(tmp_path):
    from harness.reproduce import reproduce

    ok = run_experiment(tiny(tmp_path))
    path = record_path(tmp_path / "results", ok["run_id"])
    before = path.read_bytes()
    report = reproduce(path, tmp_path / "results")
    assert report.reproduced and path.read_bytes() == before
    assert list((tmp_path / "results" / "reproduced").glob(f"*/records/{ok['run_id']}.json"))


def _start(tmp_path, *extra):
    args = [sys.executable, "-m", "harness.run", *TINY, "++eval.ppl.max_windows=40",
            f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    log = open(tmp_path / f"stderr-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen(args, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=log, text=True,
                            start_new_session=True)
    proc.log_path = log.name
    return proc


def _wait_for_eval(proc, timeout=240):
    """Wait until the perplexity loop runs (tqdm prints 'ppl/wikitext2' on stderr)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        seen = open(proc.log_path).read()
        if "ppl/wikitext2" in seen:
            return seen
        assert proc.poll() is None, seen[-2000:]
        time.sleep(0.2)
    raise AssertionError("evaluation never started")


def test_kill_9_mid_run_leaves_no_record_and_the_rerun_completes(tmp_path):
    proc = _start(tmp_path)
    _wait_for_eval(proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    records = tmp_path / "results" / "records"
    assert not [p for p in records.glob("*") if not p.name.startswith(".write-probe")]  # nothing half-written
    rerun = _start(tmp_path)
    rerun.wait(timeout=300)
    assert rerun.returncode == 0, open(rerun.log_path).read()[-2000:]
    [rec] = [json.loads(p.read_text()) for p in records.glob("*.json")]
    assert rec["status"] == "ok" and rec["metrics"]["ppl"]["wikitext2"]["n_windows"] == 40


def test_sigint_leaves_a_failed_record_naming_the_stage(tmp_path):
    proc = _start(tmp_path)
    _wait_for_eval(proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    [rec] = [json.loads(p.read_text()) for p in (tmp_path / "results" / "records").glob("*.json")]
    assert rec["status"] == "failed" and rec["error"]["stage"] == "evaluate"
    assert rec["error"]["type"] == "KeyboardInterrupt" and rec["metrics"] == {}
