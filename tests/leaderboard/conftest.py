"""Real tiny-model records for the leaderboard, tracking, notebook and reproduce tests (made once)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

# the grid: dense, magnitude 50%, wanda 50% (two seeds), wanda 2:4
GRID = [("dense", "none", 0), ("magnitude", "unstructured_50", 0),
        ("wanda", "unstructured_50", 0), ("wanda", "unstructured_50", 1), ("wanda", "nm_2_4", 0)]


def tiny_config(results_dir: Path, method: str, target: str, seed: int = 0, *extra: str):
    from harness.config import compose_config

    return compose_config(["model=tiny-llama", f"method={method}", f"target={target}", f"seed={seed}",
                           f"paths.results_dir={results_dir}", "runtime.threads=1", "wandb.mode=disabled",
                           *extra])


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory, data_dir) -> Path:
    """A results dir with real records of the GRID on tiny-llama (about 15 s in all)."""
    from harness.run import run_experiment

    results = tmp_path_factory.mktemp("lb") / "results"
    for method, target, seed in GRID:
        record = run_experiment(tiny_config(results, method, target, seed))
        assert record["status"] == "ok", record["error"]
    return results


@pytest.fixture
def results_copy(tiny_results, tmp_path) -> Path:
    """A private copy of tiny_results a test may add files to."""
    import shutil

    dst = tmp_path / "results"
    shutil.copytree(tiny_results / "records", dst / "records")
    return dst


def failed_variant(record: dict, stage: str = "prune") -> dict:
    """The record of the same cell had it failed (what run_experiment writes on an exception)."""
    r = copy.deepcopy(record)
    r["config"]["seed"] = 7
    from harness.records import run_id_for

    r.update(run_id=run_id_for(r["config"]), status="failed", metrics={}, metric_declarations={}, measured={},
             error={"stage": stage, "type": "RuntimeError", "message": "out of memory", "traceback": ""})
    return r


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())
