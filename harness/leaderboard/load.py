"""Read every record under <results>: <results>/records and every named result set below it
(<results>/<set>/.../records); a corrupt or unreadable file is named and skipped, and a run id seen
twice keeps its first file (in path order) with the second named as a problem."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from harness.records import records_dir, validate_record

log = logging.getLogger("prunebench.leaderboard")


@dataclass
class Loaded:
    records: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)        # paths[i] holds records[i]
    sets: list[str] = field(default_factory=list)          # sets[i]: records[i]'s result set ("" = top level)
    problems: list[tuple[Path, str]] = field(default_factory=list)   # (file, why it was skipped)


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
    return path.parent.parent.relative_to(Path(results_dir)).as_posix().replace(".", "") or ""


def load_records(results_dir: str | Path) -> Loaded:
    out = Loaded()
    seen: dict[str, Path] = {}
    for path in record_files(results_dir):
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError(f"top level is {type(record).__name__}, not an object")
            validate_record(record)
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            why = f"{type(exc).__name__}: {exc}"
            log.warning("skipping record %s (%s)", path, why)
            out.problems.append((path, why))
            continue
        if record["run_id"] in seen:
            out.problems.append((path, f"duplicate run_id {record['run_id']} (kept {seen[record['run_id']]})"))
            continue
        seen[record["run_id"]] = path
        out.records.append(record)
        out.paths.append(path)
        out.sets.append(result_set(results_dir, path))
    return out
