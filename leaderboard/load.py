"""Read every record under <results>: <results>/records and every named result set below it
(<results>/<set>/.../records), each in the current schema (version-1 records are upgraded in memory:
harness.records.upgrade_record). A corrupt or unreadable file is named and skipped, a
duplicate run_id keeps the newest file, badly typed fields and impossible metric values are named
(check_record_fields)."""

from __future__ import annotations

import json
import math
import logging
from dataclasses import dataclass, field
from pathlib import Path

from harness.records import records_dir, upgrade_record, validate_record

log = logging.getLogger("prunebench.leaderboard")


@dataclass
class Loaded:
    records: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)        # paths[i] holds records[i]
    sets: list[str] = field(default_factory=list)          # sets[i]: records[i]'s result set ("" = top level)
    problems: list[tuple[Path, str]] = field(default_factory=list)   # (file, why it was skipped)
    warnings: list[str] = field(default_factory=list)    # coerced fields, impossible values (named)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # run_id -> files not kept


def record_files(results_dir: str | Path) -> list[Path]:
    """<results>/records/*.json and <results>/**/records/*.json outside the generated leaderboard
    (temp files of an in-flight atomic write start with '.')."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    dirs = [records_dir(root)] if records_dir(root).is_dir() else []
    dirs += sorted(d for d in root.rglob("records") if d.is_dir() and d != records_dir(root)
                   and "leaderboard" not in d.relative_to(root).parts)
    return [p for d in dirs for p in sorted(d.glob("*.json")) if not p.name.startswith(".")]


def result_set(results_dir: str | Path, path: Path) -> str:
    """The result set a record file belongs to: its records/ folder's parent, relative to <results>."""
    rel = path.parent.parent.relative_to(Path(results_dir)).as_posix()
    return "" if rel == "." else rel


# Integer fields of a record's config; a numeric string is coerced (with a warning), anything else
# rejects the record.
INT_FIELDS = (("config", "seed"), ("config", "calib", "seed"), ("config", "calib", "n_samples"),
              ("config", "calib", "seq_len"))
# Metric leaves with a known range: perplexity >= 1 (exp of a non-negative mean NLL), accuracy in [0, 1].
RANGES = {"ppl": (1.0, math.inf), "kv_ppl": (1.0, math.inf), "ppl_prompted": (1.0, math.inf), "acc": (0.0, 1.0),
          "acc_norm": (0.0, 1.0)}


def _range_for(path: tuple[str, ...]) -> tuple[float, float] | None:
    if path and path[0] in ("ppl", "kv_ppl", "ppl_prompted") and path[-1] == "value":
        return RANGES[path[0]]
    if path and path[-1] in ("acc", "acc_norm"):
        return RANGES[path[-1]]
    return None


def _number(v) -> float | None:
    """A float for numbers and numeric strings ('nan' and 'inf' included, as records store them)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def check_record_fields(record: dict, name: str = "record") -> tuple[dict | None, list[str]]:
    """One record's typed fields and metric values, checked before it reaches a table.

    Returns (record or None when rejected, warnings). Numeric strings in integer fields are
    coerced; other types reject the record. Metric values that are NaN, infinite or outside their
    range (a perplexity below 1, an accuracy outside [0, 1]) are removed from the record (set to
    None) and named, so an impossible number is never shown as a result."""
    warnings: list[str] = []
    for path in INT_FIELDS:
        holder = record
        for part in path[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or path[-1] not in holder or holder[path[-1]] is None:
            continue
        value = holder[path[-1]]
        if isinstance(value, int) and not isinstance(value, bool):
            continue
        number = _number(value)
        if number is not None and math.isfinite(number) and number == int(number):
            holder[path[-1]] = int(number)
            warnings.append(f"{name}: {'.'.join(path)}={value!r} is not an integer; coerced to {int(number)}")
        else:
            return None, [f"{name}: {'.'.join(path)}={value!r} is not an integer; record rejected"]

    def walk(node, path: tuple[str, ...]):
        if isinstance(node, dict):
            for k in list(node):
                if isinstance(node[k], (dict, list)):
                    walk(node[k], path + (str(k),))
                    continue
                bounds = _range_for(path + (str(k),))
                if bounds is None:
                    continue
                number = _number(node[k])
                lo, hi = bounds
                if number is None or not math.isfinite(number) or not lo <= number <= hi:
                    warnings.append(f"{name}: metrics.{'.'.join(path + (str(k),))}={node[k]!r} is impossible "
                                    f"(expected a finite number in [{lo:g}, {hi:g}]); flagged and not shown")
                    node[k] = None
                elif not isinstance(node[k], (int, float)):
                    node[k] = number
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, path + (str(i),))

    if isinstance(record.get("metrics"), dict):
        walk(record["metrics"], ())
    return record, warnings


def _newest_key(record: dict, path: Path) -> tuple:
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return (str(record.get("finished_at") or ""), mtime)


def load_records(results_dir: str | Path) -> Loaded:
    out = Loaded()
    by_run: dict[str, int] = {}
    for path in record_files(results_dir):
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError(f"top level is {type(record).__name__}, not an object")
            record = upgrade_record(record)    # version-1 records get their metric declarations
            validate_record(record)
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            why = f"{type(exc).__name__}: {exc}"
            log.warning("skipping record %s (%s)", path, why)
            out.problems.append((path, why))
            continue
        record, warnings = check_record_fields(record, path.name)
        for w in warnings:
            log.warning("%s", w)
        out.warnings += warnings
        if record is None:
            out.problems.append((path, warnings[-1]))
            continue
        run_id = str(record["run_id"])
        if run_id in by_run:  # two files claim one run: keep the newest, list the other
            i = by_run[run_id]
            keep_new = _newest_key(record, path) > _newest_key(out.records[i], out.paths[i])
            dropped = out.paths[i] if keep_new else path
            kept = path if keep_new else out.paths[i]
            why = f"duplicate run_id {run_id}: kept the newer {kept.name}"
            log.warning("skipping record %s (%s)", dropped, why)
            out.problems.append((dropped, why))
            out.duplicates.setdefault(run_id, []).append(dropped)
            if keep_new:
                out.records[i], out.paths[i] = record, path
                out.sets[i] = result_set(results_dir, path)
            continue
        by_run[run_id] = len(out.records)
        out.records.append(record)
        out.paths.append(path)
        out.sets.append(result_set(results_dir, path))
    return out


def stale_method_versions(records: list[dict], sets: list[str]) -> list[str]:
    """One warning per (method, version, result set) whose records ran another version of a
    registered method than the code's current one: their numbers are not what `method=<name>`
    computes today (e.g. a default that changed to the reference's), so the board says so."""
    from methods.registry import available, build_method

    current = {name: str(build_method(name).version) for name in available()}
    stale: dict[tuple[str, str, str], int] = {}
    for record, result_set in zip(records, sets):
        method = record.get("method") or {}
        name, version = method.get("name"), str(method.get("version"))
        if name in current and version != current[name]:
            key = (name, version, result_set)
            stale[key] = stale.get(key, 0) + 1
    return [f"{n} record(s) of {name} in {result_set} ran version {version}; the current {name} is version "
            f"{current[name]} (see its method page's differences): not re-run under the current code"
            for (name, version, result_set), n in sorted(stale.items())]

