"""A suite through hydra-submitit-launcher on the local single-node Slurm cluster (slurm/start.sh).

CI installs Slurm (scripts/install.sh -> slurm/install.sh), so these run there; elsewhere they skip
only when the Slurm binaries are absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.e2e.test_sweep import launched, records, run_sweep

pytestmark = pytest.mark.slurm

SLURM_BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd")


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


@pytest.fixture(scope="session")
def slurm_cluster():
    missing = [b for b in SLURM_BINARIES if _which(b) is None]
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)} missing): run slurm/install.sh")
    root = os.environ.get("PRUNEBENCH_SLURM_ROOT", "/tmp/prunebench-slurm")
    # The daemons detach themselves (setsid, stdio to log files), so capturing output cannot hang.
    proc = subprocess.run(["bash", str(REPO / "slurm" / "start.sh")], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PRUNEBENCH_SLURM_ROOT": root})
    assert proc.returncode == 0, f"slurm/start.sh failed:\n{proc.stdout}\n{proc.stderr}"
    yield os.path.join(root, "etc", "slurm.conf")
    if "already up" not in proc.stdout:  # started here: stopped here (a developer's stays up)
        subprocess.run(["bash", str(REPO / "slurm" / "stop.sh")], capture_output=True, timeout=120,
                       env={**os.environ, "PRUNEBENCH_SLURM_ROOT": root})


def test_suite_on_slurm_records_job_ids_and_judges_by_records(tmp_path, data_dir, slurm_cluster,
                                                              monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    monkeypatch.setenv("PRUNEBENCH_DATA_DIR", str(data_dir))
    results = tmp_path / "r"
    # 2 cells: one ok, one that raises at evaluate (its Slurm job still "completes": the sweep's
    # verdict comes from the records, not from the launcher).
    grid = ["launcher=slurm", "method=magnitude", "target=nm_2_4", "eval.ppl.seq_len=128,100000000",
            "model.source.config.max_position_embeddings=100000000",  # the long window fails at evaluate
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]
    proc = run_sweep(results, *grid)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert launched(proc) == 2
    recs = list(records(results).values())
    assert sorted(r["status"] for r in recs) == ["failed", "ok"], out
    ids = [r["env"]["launcher"] for r in recs]
    assert all(i.get("slurm_job_id") and i.get("slurm_array_job_id") for i in ids), ids
    assert len({i["slurm_array_job_id"] for i in ids}) == 1            # one array per launch
    assert sorted(i["slurm_array_task_id"] for i in ids) == ["0", "1"]
    failed = next(r for r in recs if r["status"] == "failed")
    assert failed["error"]["stage"] == "evaluate" and failed["error"]["type"] == "ValueError"

    # Slurm's accounting agrees the jobs ran (and shows both as COMPLETED: not to be trusted).
    # (the result file appears a moment before the job ends: poll until accounting has caught up)
    for _ in range(60):
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j",
                               ids[0]["slurm_array_job_id"]], capture_output=True, text=True, timeout=30)
        states = dict(line.split("|") for line in acct.stdout.split())
        if len(states) == 2 and not {"RUNNING", "PENDING", "COMPLETING"} & set(states.values()):
            break
        time.sleep(0.5)
    assert set(states.values()) == {"COMPLETED"}, acct.stdout + acct.stderr

    again = run_sweep(results, *grid)                   # resume: the ok cell is never resubmitted
    assert launched(again) == 0 and again.returncode == 1
