"""Runtime environment: offline switches, thread pinning, and the facts a record must carry.

Nothing here runs at import time; entry points call :func:`configure_runtime` first.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Libraries whose versions can move a number; recorded in every record.
TRACKED_LIBRARIES = (
    "torch", "transformers", "datasets", "lm_eval", "accelerate", "peft", "safetensors",
    "gguf", "hydra-core", "submitit", "numpy", "pandas", "wandb",
)


def default_cache_dir() -> Path:
    """Where models, block statistics and converted task data are cached when paths.cache_dir is not
    set: $PRUNEBENCH_CACHE, else ~/.cache/prunebench (conf/paths/default.yaml reads the same variable)."""
    return Path(os.environ.get("PRUNEBENCH_CACHE") or Path.home() / ".cache" / "prunebench").expanduser()


def configure_offline(offline: bool = True) -> None:
    """Set the HF offline switches. Must run before `datasets`/`transformers` are imported,
    otherwise `datasets` reaches for the network for every dataset it builds. Offline (the default:
    tests, CI, the demo) keeps switches the environment already set; `runtime.offline=false` turns
    them off, so the hub can be reached."""
    switches = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    for name in switches:
        if offline:
            os.environ.setdefault(name, "1")
        else:
            os.environ[name] = "0"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "offline")


def offline_from_argv(argv: list[str]) -> bool:
    """runtime.offline from the command line, read before Hydra composes (the HF libraries fix their
    offline switch when first imported). PRUNEBENCH_ONLINE=1 is the environment's equivalent."""
    value = None
    for arg in argv:
        key, sep, v = arg.lstrip("+").partition("=")
        if sep and key == "runtime.offline":
            value = v.strip().lower()
    if value is not None:
        return value not in ("false", "0", "no", "off")
    return os.environ.get("PRUNEBENCH_ONLINE") != "1"


def configure_runtime(threads: int | None, offline: bool = True) -> int:
    """Offline switches plus an explicit torch thread count (results move in the last digits
    with the thread count, so it is pinned and recorded). Returns the thread count in force."""
    configure_offline(offline)
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


LOCK_FILE = "requirements.lock"


def lock_state(root: Path = REPO_ROOT) -> dict[str, object]:
    """The environment lock (exact versions, `uv pip compile`) this checkout installs from, by hash."""
    import hashlib

    path = root / LOCK_FILE
    if not path.is_file():
        return {"file": LOCK_FILE, "sha256": None}
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def git_state(root: Path = REPO_ROOT) -> dict[str, object]:
    """Code version: commit sha and whether the tree had uncommitted changes to tracked files.
    results/ is left out: it holds records (outputs, not code), and a sweep that re-runs or retires
    committed records there must not mark its own new records as made by changed code."""
    def _git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def device_description(device: str) -> dict[str, object]:
    import torch

    info: dict[str, object] = {"device": device, "threads": torch.get_num_threads(),
                               "platform": platform.platform(), "python": platform.python_version()}
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def resolve_device(device: str) -> str:
    """`auto` picks CUDA when present."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available")
    return device


def resolve_dtype(dtype: str, device: str):
    """`auto`: float32 on CPU (bf16 matmuls are >100x slower on these CPUs), bf16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(table)}")
    return table[dtype]
