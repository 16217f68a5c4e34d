"""Hydra as users know it: the plugin's own launcher name runs a plain multirun of harness.run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_run_multirun_with_submitit_local(tmp_path, data_dir):
    env = dict(os.environ, PRUNEBENCH_DATA_DIR=str(data_dir), PRUNEBENCH_QUIET="1")
    proc = subprocess.run([sys.executable, "-m", "harness.run", "-m", "hydra/launcher=submitit_local",
                           "method=wanda,magnitude", "model=tiny-llama", "target=nm_2_4", "runtime.threads=1",
                           "eval.ppl.max_windows=1", f"paths.results_dir={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert sorted(r["method"]["name"] for r in records) == ["magnitude", "wanda"]
    assert all(r["status"] == "ok" and r["measured"]["nm_check"]["violations"] == 0 for r in records)
    assert len(list(tmp_path.glob("logs/multirun/*/.submitit/*/*_result.pkl"))) == 2  # one submitit job each
