"""Suites as resumable Hydra multiruns (harness.sweep / harness.status) on the tiny random-init model.

Each test launches `python -m harness.sweep suite=tiny ...` as a subprocess into its own results
directory and then judges the sweep by its records, never by the launcher's job status.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# One grid that exercises isolation: 1 ok cell, 1 raising at evaluate (a window longer than the
# text: ValueError), 2 running out of memory at load (a 25.6 TB MLP: the allocator refuses).
# The model admits 1e8 positions, so the long window passes validation and fails at evaluate.
ISOLATION_GRID = ["method=magnitude", "target=unstructured_50",
                  "model.source.config.max_position_embeddings=100000000",
                  "model.source.config.intermediate_size=128,100000000000",
                  "eval.ppl.seq_len=128,100000000"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def sweep_cmd(results: Path, *args: str, module: str = "harness.sweep") -> list[str]:
    return [sys.executable, "-m", module, "suite=tiny", f"paths.results_dir={results}", *args]


def run_sweep(results: Path, *args: str, module: str = "harness.sweep", timeout: int = 600):
    proc = subprocess.run(sweep_cmd(results, *args, module=module), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc


def launched(proc) -> int:
    m = re.search(r"launching (\d+) via", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return int(m.group(1))


def in_process(results: Path, *args: str, module: str = "harness.sweep", capsys=None):
    """A sweep/status call that launches nothing, run in this process (no interpreter start-up)."""
    import importlib

    code = importlib.import_module(module).main(["suite=tiny", f"paths.results_dir={results}", *args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def records(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))}


def fingerprints(results: Path) -> dict[str, tuple]:
    return {p.stem: (p.stat().st_mtime_ns, json.loads(p.read_text())["started_at"])
            for p in (results / "records").glob("*.json")}


@pytest.fixture
def data_env(data_dir, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_DATA_DIR", str(data_dir))


def test_isolation_resume_and_status_in_process(tmp_path, data_env, capsys):
    results = tmp_path / "r"
    first = run_sweep(results, *ISOLATION_GRID)
    out = first.stdout + first.stderr
    assert first.returncode == 1, out                     # failures reach the exit status
    assert launched(first) == 4
    recs = records(results)
    assert len(recs) == 4, out                            # every cell left a record
    by_status = {}
    for r in recs.values():
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status["ok"]) == 1 and len(by_status["failed"]) == 3, out
    ok = by_status["ok"][0]
    assert ok["measured"]["sparsity_blocks"] == pytest.approx(0.5, abs=1e-3)
    errors = sorted((r["error"]["stage"], r["error"]["type"]) for r in by_status["failed"])
    assert errors == [("evaluate", "ValueError"), ("load", "RuntimeError"), ("load", "RuntimeError")]
    assert all("allocate" in r["error"]["message"] for r in by_status["failed"]
               if r["error"]["stage"] == "load")
    assert out.count("NOT OK") == 3
    assert not list((results / "running").glob("*.json"))  # markers are removed with the record

    status = in_process(results, *ISOLATION_GRID, module="harness.status", capsys=capsys)
    assert status.returncode == 1
    states = re.findall(r"^[0-9a-f]{16}\s+(\w+)", status.stdout, flags=re.M)
    assert sorted(states) == ["done", "failed", "failed", "failed"], status.stdout

    before = fingerprints(results)
    again = in_process(results, *ISOLATION_GRID, capsys=capsys)   # resume: nothing to run
    assert launched(again) == 0 and again.returncode == 1
    assert fingerprints(results) == before

    retry = run_sweep(results, *ISOLATION_GRID, "retry_failed=true")   # only the failed cells
    assert launched(retry) == 3 and retry.returncode == 1
    after = fingerprints(results)
    assert after[ok["run_id"]] == before[ok["run_id"]]               # the ok cell was not re-run
    assert all(after[k] != before[k] for k in before if k != ok["run_id"])
    assert set(after) == set(before)                                 # nothing duplicated


def test_invalid_cells_are_listed_not_launched(tmp_path, data_env, capsys):
    results = tmp_path / "r"
    proc = in_process(results, "method=dense,magnitude", "target=none", "dry_run=true", capsys=capsys)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "invalid cell (not launched): method=magnitude target=none" in proc.stdout
    assert "cannot produce pattern 'none'" in proc.stdout
    assert not (results / "records").exists()
    bad = in_process(results, "method=magnitude,no_such_method", capsys=capsys)
    assert bad.returncode == 2 and "method/no_such_method" in bad.stderr


def test_shared_override_of_a_swept_methods_parameter(tmp_path, data_env):
    """`method=sparsegpt method.params.blocksize=64`: the parameter exists only once the swept
    group is chosen; the launch composes it with the cell's own overrides and the record has it."""
    results = tmp_path / "r"
    proc = run_sweep(results, "method=sparsegpt", "target=unstructured_50", "method.params.blocksize=64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = records(results).values()
    assert rec["status"] == "ok" and rec["method"]["params"]["blocksize"] == 64

def test_submitit_local_launcher(tmp_path, data_env):
    results = tmp_path / "r"
    proc = run_sweep(results, "launcher=local", "method=magnitude,wanda", "target=nm_2_4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = records(results)
    assert sorted(r["method"]["name"] for r in recs.values()) == ["magnitude", "wanda"]
    assert all(r["status"] == "ok" and r["measured"]["nm_check"]["violations"] == 0 for r in recs.values())
    # each cell ran as its own submitit job, which returned the cell's status
    assert len(list((results / "logs" / "sweeps" / "tiny").glob("*/.submitit/*/*_result.pkl"))) == 2


def test_kill_mid_sweep_then_relaunch_completes_exactly_the_missing_cells(tmp_path, data_env, capsys):
    results = tmp_path / "r"
    grid = ["method=magnitude", "target=unstructured_50,unstructured_60,nm_2_4"]
    proc = subprocess.Popen(sweep_cmd(results, *grid), cwd=REPO, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and not list((results / "records").glob("*.json")):
        assert proc.poll() is None, "sweep ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)                   # kill -9 the whole sweep mid-way
    proc.wait(timeout=30)
    done_before = fingerprints(results)
    assert 1 <= len(done_before) < 3, done_before
    assert all(r["status"] == "ok" for r in records(results).values())

    status = in_process(results, *grid, module="harness.status", capsys=capsys)
    states = re.findall(r"^[0-9a-f]{16}\s+(\w+)", status.stdout, flags=re.M)
    assert states.count("done") == len(done_before)
    assert set(states) - {"done"} <= {"missing", "stale"} and "running" not in states, status.stdout

    relaunch = run_sweep(results, *grid)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    assert launched(relaunch) == 3 - len(done_before)     # exactly the missing cells
    after = fingerprints(results)
    assert len(after) == 3 and all(r["status"] == "ok" for r in records(results).values())
    assert {k: after[k] for k in done_before} == done_before   # finished cells were not re-run
    assert not list((results / "running").glob("*.json"))
    assert not list((results / "records").glob(".*.tmp"))      # atomic writes: no half records
