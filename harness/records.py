"""Run records: one versioned JSON per run at <results_dir>/records/<run_id>.json.

run_id is a hash of the *semantic* config (what can change a number); paths, launcher and logging
settings are excluded, so the same experiment launched from anywhere has the same id. Records are
written atomically (temp file + fsync + rename): a killed job never leaves half a record.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1"
STATUSES = ("ok", "failed", "skipped")
# Config keys that never change a number and so are not part of the run identity.
NON_SEMANTIC_KEYS = ("paths", "hydra", "wandb", "force", "retry_failed", "launcher", "suite")
REQUIRED_KEYS = ("schema_version", "run_id", "status", "method", "model", "target", "config", "env")


def semantic_config(config: dict) -> dict:
    from harness.config import model_name

    out = {k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS}
    model = out.get("model")
    if isinstance(model, dict) and not model.get("name"):  # model=hf|gguf|local: the derived name
        out["model"] = {**model, "name": model_name(model)}
    output = out.get("output")
    if isinstance(output, dict) and output.get("format", "safetensors") == "safetensors":
        out["output"] = {k: v for k, v in output.items() if k != "format"}  # the default keeps run ids
    if (out.get("kv") or {}).get("name", "none") == "none":  # the default keeps earlier run ids stable
        out.pop("kv", None)
    return out


def run_id_for(config: dict) -> str:
    blob = json.dumps(semantic_config(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# What only evaluates a pruned model: records that differ only here share one pruned model.
EVALUATION_KEYS = ("eval", "output")


def pruning_id_for(config: dict) -> str:
    """Identity of the pruned model alone (the run identity without its evaluation and output
    settings). `harness.evaluate` writes records with a new run_id and the same pruning_id; the
    leaderboard joins records on it."""
    sem = {k: v for k, v in semantic_config(config).items() if k not in EVALUATION_KEYS}
    blob = json.dumps(sem, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def records_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "records"


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return records_dir(results_dir) / f"{run_id}.json"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become strings (JSON has no NaN), tensors/paths become plain values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    return obj


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; records are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_record(results_dir: str | Path, record: dict) -> Path:
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}")
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = record_path(results_dir, record["run_id"])
    write_atomic(path, json.dumps(_clean(record), indent=2, sort_keys=False) + "\n")
    return path


def read_record(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    validate_record(record)
    return record


def validate_record(record: dict) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks keys {missing}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record has unknown status {record['status']!r}")
    if str(record["schema_version"]) != SCHEMA_VERSION:
        raise ValueError(f"record schema_version {record['schema_version']} != {SCHEMA_VERSION}")


def existing_status(results_dir: str | Path, run_id: str) -> str | None:
    path = record_path(results_dir, run_id)
    if not path.is_file():
        return None
    try:
        return read_record(path)["status"]
    except (OSError, ValueError):
        return None
