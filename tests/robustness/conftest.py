"""Helpers for the robustness suite: bad inputs and faults, each with its exact outcome.

Every test here runs the tiny random-init LLaMA (seconds) unless the case needs the real GGUF.
Subprocess helpers run the real command lines (`python -m harness.run ...`) from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["model=tiny-llama", "++eval.ppl.max_windows=2", "++eval.ppl.seq_len=128", "calib.n_samples=4",
        "calib.seq_len=64", "runtime.threads=1", "wandb.mode=disabled"]


def tiny(tmp_path: Path, *extra: str, results: Path | None = None, cache: Path | None = None):
    """The composed config of a tiny run writing under tmp_path."""
    from harness.config import compose_config

    return compose_config(TINY + [f"paths.results_dir={results or tmp_path / 'results'}",
                                  f"paths.cache_dir={cache or tmp_path / 'cache'}", *extra])


def plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def config_error(cfg) -> str:
    """The ConfigError message validation gives (the run_experiment path), or fail."""
    from harness.run import run_experiment
    from harness.validate import ConfigError

    with pytest.raises(ConfigError) as info:
        run_experiment(cfg)
    return str(info.value)


def env(**extra) -> dict:
    e = dict(os.environ)
    e.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"})
    e.update(extra)
    return e


def cli(*args: str, module: str = "harness.run", timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def first_line(stderr: str, prefix: str = "prunebench:") -> str:
    """The first line the program itself printed (library warnings are skipped)."""
    return next((line for line in stderr.splitlines() if line.startswith(prefix)), "")


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]


def copy_data(src: Path, dst: Path, *folders: str) -> Path:
    """A private data dir with copies of `folders` (the shared data is never modified)."""
    for folder in folders:
        shutil.copytree(src / folder, dst / folder)
    return dst


@pytest.fixture
def tiny_data(tmp_path, data_dir) -> Path:
    """A private copy of the data a tiny run reads (WikiText-2 and the C4 prefix)."""
    return copy_data(data_dir, tmp_path / "data", "wikitext-2-raw-v1", "c4")
