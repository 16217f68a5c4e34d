"""Read every record under <results>/records; a corrupt or unreadable file is named and skipped."""

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
    problems: list[tuple[Path, str]] = field(default_factory=list)   # (file, why it was skipped)


def record_files(results_dir: str | Path) -> list[Path]:
    """<results>/records/*.json (temp files of an in-flight atomic write start with '.')."""
    d = records_dir(results_dir)
    return sorted(p for p in d.glob("*.json") if not p.name.startswith(".")) if d.is_dir() else []


def load_records(results_dir: str | Path) -> Loaded:
    out = Loaded()
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
        out.records.append(record)
        out.paths.append(path)
    return out
