"""Run records: one versioned JSON per run at <results_dir>/records/<run_id>.json.

run_id is a hash of the *semantic* config (what can change a number); paths, launcher and logging
settings are excluded, so the same experiment launched from anywhere has the same id. Records are
written atomically (temp file + fsync + rename): a killed job never leaves half a record.

A record on disk holds no machine path: a path under one of the run's roots (data, cache,
checkpoint and results folders, the repository, the home and temp folders) is written relative to
that root, named in angle brackets (`local:<data_dir>/c4/train.jsonl`); see `portable_paths`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.files import write_atomic

# 2: every evaluator section of `metrics` has its declaration in `metric_declarations`
# (harness.record_schema); version-1 records are upgraded when read (upgrade_record).
SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", SCHEMA_VERSION)
STATUSES = ("ok", "failed")
from harness.identity import NON_SEMANTIC_KEYS  # noqa: E402,F401 - kept importable from here
REQUIRED_KEYS = ("schema_version", "run_id", "status", "method", "model", "target", "config", "env")


def _defaults(config: dict, param_defaults: dict | None) -> dict:
    """The parameter defaults the identity drops: the plan's when the caller has validated the
    config, else resolved from it the same way (harness.validate.param_defaults)."""
    if param_defaults is not None:
        return param_defaults
    from harness.validate import param_defaults as resolve

    return resolve(config)


def semantic_config(config: dict, param_defaults: dict | None = None) -> dict:
    """The canonical form of the run identity (harness.identity), without its data hashes."""
    from harness.identity import canonical

    return canonical(config, _defaults(config, param_defaults))["config"]


def run_id_for(config: dict, param_defaults: dict | None = None) -> str:
    """Hash of the versioned canonical identity (harness.identity): config values that change a
    number, at their defaults omitted, plus the sha256 of the data files read."""
    from harness.identity import run_id_for as identity_run_id

    return identity_run_id(config, _defaults(config, param_defaults))


# What only evaluates a pruned model: records that differ only here share one pruned model.
EVALUATION_KEYS = ("eval",)


def pruning_id_for(config: dict, param_defaults: dict | None = None) -> str:
    """Identity of the pruned model alone: the canonical run identity (harness.identity) without its
    evaluation settings and the hashes of the evaluation data. `harness.evaluate` writes records with
    a new run_id and the same pruning_id; the leaderboard joins records on it."""
    from harness.identity import canonical

    ident = canonical(config, _defaults(config, param_defaults))
    ident["config"] = {k: v for k, v in ident["config"].items() if k not in EVALUATION_KEYS}
    ident["data"] = {k: v for k, v in ident["data"].items() if not k.startswith("eval:")}
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
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


REPO_ROOT = Path(__file__).resolve().parent.parent


def path_roots(paths: dict | None = None) -> dict[str, str]:
    """name -> absolute folder, for `portable_paths`: the config's `paths` section (data_dir,
    cache_dir, checkpoint_dir, results_dir) plus the repository, home and temp folders."""
    roots = {k: v for k, v in (paths or {}).items() if v and k.endswith("_dir")}
    roots.update({"repo": REPO_ROOT, "home": Path.home(), "tmp": tempfile.gettempdir()})
    return {k: str(v) for k, v in roots.items()}


def portable_paths(obj: Any, roots: dict[str, str]) -> Any:
    """A copy of `obj` where every absolute path under a root reads `<root name>/relative`.

    The most specific root wins (longest prefix); both the spelling given and the resolved one
    (symlinks) match. A root equal to a string becomes `<root name>` alone."""
    prefixes: dict[str, str] = {}
    for name, folder in roots.items():
        p = Path(str(folder)).expanduser()
        if not p.is_absolute():
            continue
        for spelling in {str(p), str(p.resolve())}:
            if spelling != "/":
                prefixes.setdefault(spelling.rstrip("/"), name)
    if not prefixes:
        return obj
    pattern = re.compile("(?:" + "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
                         + r")(?![\w.-])")

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return pattern.sub(lambda m: f"<{prefixes[m.group(0)]}>", o)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        if isinstance(o, Path):
            return walk(str(o))
        return o

    return walk(obj)


# Room a record needs (a few hundred KB at most) plus margin: checked before any work starts.
MIN_FREE_BYTES = 16 << 20


class ResultsDirError(ConfigError):
    """The results directory cannot take a record; one line, raised before any work."""


def check_writable(results_dir: str | Path, min_free: int | None = None) -> None:
    """Create records/ and write + remove a probe file there; require `min_free` bytes free."""
    import shutil

    min_free = MIN_FREE_BYTES if min_free is None else min_free

    rdir = records_dir(results_dir)
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=rdir, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ResultsDirError(f"results directory {results_dir} is not writable: "
                              f"{exc.strerror or exc}") from None
    free = shutil.disk_usage(rdir).free
    if free < min_free:
        raise ResultsDirError(f"results directory {results_dir} has {free} bytes free, "
                              f"fewer than the {min_free} a record needs")


def fallback_dir() -> Path:
    """Where a record goes when its results directory fails at the final write."""
    return Path(tempfile.gettempdir()) / "prunebench-records"


def failures_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "failures"


def write_record(results_dir: str | Path, record: dict, roots: dict[str, str] | None = None) -> Path:
    """Write the record at records/<run_id>.json, except that an `ok` record there is never replaced
    by a failure: the failed record goes beside it, to failures/<run_id>-<time>.json. `roots`
    (name -> folder) turns machine paths into root-relative ones (default: the record's own config
    paths plus repository, home and temp folders)."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}")
    if roots is None:
        roots = path_roots({"results_dir": results_dir, **((record.get("config") or {}).get("paths") or {})})
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = record_path(results_dir, record["run_id"])
    if record["status"] != "ok" and existing_status(results_dir, record["run_id"]) == "ok":
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = failures_dir(results_dir) / f"{record['run_id']}-{stamp}-{os.getpid()}.json"
        record["kept_ok_record"] = str(record_path(results_dir, record["run_id"]))
    record = portable_paths(record, roots)
    write_atomic(path, json.dumps(_clean(record), indent=2, sort_keys=False) + "\n")
    return path


def read_record(path: str | Path) -> dict:
    """The record at `path` in the current schema (a version-1 record is upgraded in memory)."""
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    record = upgrade_record(record)
    validate_record(record)
    return record


def upgrade_record(record: dict) -> dict:
    """`record` in the current schema: a version-1 record gets the metric declarations its key
    names imply (harness.records_v1, the one place they are derived); a current one is returned as
    it is. An unknown version raises ValueError."""
    version = str(record.get("schema_version"))
    if version not in READABLE_VERSIONS:
        raise ValueError(f"record schema_version {record.get('schema_version')} is not one this code reads "
                         f"({', '.join(READABLE_VERSIONS)})")
    if version == "1":
        from harness.records_v1 import upgrade

        return upgrade(record)
    return record


def validate_record(record: dict) -> None:
    """A record of the current schema: required keys, a known status, and metric declarations that
    cover every metrics section and point at its values (harness.record_schema.check_declarations)."""
    from harness.record_schema import check_declarations

    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks keys {missing}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record has unknown status {record['status']!r}")
    if str(record["schema_version"]) != SCHEMA_VERSION:
        raise ValueError(f"record schema_version {record['schema_version']} != {SCHEMA_VERSION} "
                         f"(upgrade_record reads version {', '.join(READABLE_VERSIONS[:-1])})")
    metrics = record.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ValueError(f"record metrics is a {type(metrics).__name__}, not an object")
    check_declarations(metrics, record.get("metric_declarations", {} if not metrics else None))


def existing_status(results_dir: str | Path, run_id: str) -> str | None:
    path = record_path(results_dir, run_id)
    if not path.is_file():
        return None
    try:
        return read_record(path)["status"]
    except (OSError, ValueError):
        return None
