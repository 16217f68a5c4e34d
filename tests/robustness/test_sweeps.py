"""Concurrent sweeps: each cell is claimed atomically (O_CREAT|O_EXCL under a lock) and runs once."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

from tests.robustness.conftest import REPO, env


def _claim(results, run_id, barrier, out):
    from harness.sweep import claim_cell

    barrier.wait()
    out.put(claim_cell(results, run_id))


def test_simultaneous_claims_of_one_cell_have_one_winner(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(tmp_path, "abc123", barrier, out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = [out.get(timeout=5) for _ in procs]
    assert sorted(results) == [False] * 5 + [True]


def test_claim_refuses_done_and_live_cells_and_takes_over_dead_ones(tmp_path):
    from harness.sweep import claim_cell, marker_path

    assert claim_cell(tmp_path, "cell") and not claim_cell(tmp_path, "cell")   # this process holds it
    marker = marker_path(tmp_path, "cell")
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps(info | {"pid": 2 ** 22 + 7}))               # a pid that does not exist
    assert claim_cell(tmp_path, "cell")


def test_two_sweeps_started_together_run_each_cell_once(tmp_path):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.sweep", "suite=tiny", "method=magnitude", "target=unstructured_50,nm_2_4",
           f"paths.results_dir={results}", f"paths.cache_dir={tmp_path / 'cache'}", "eval.ppl.max_windows=2",
           "eval.ppl.seq_len=128", "wandb.mode=disabled"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    launched = []
    for cells in (results / "logs" / "sweeps" / "tiny").glob("*/cells.json"):
        launched += [c["run_id"] for c in json.loads(cells.read_text())]
    records = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records), outs
    assert sorted(launched) == sorted(r["run_id"] for r in records)      # each cell launched exactly once
