from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EvalContext:
    device: str
    data_dir: Path | None
    run_dir: Path | None = None        # per-sample outputs go beside the record
    run_id: str | None = None
    seed: int = 0
    threads: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)   # e.g. KV policy, dense reference
