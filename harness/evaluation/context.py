from __future__ import annotations

from dataclasses import dataclass
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
    kv: Any = None                     # the run's KV-cache policy (harness.kv.POLICIES); None: the full cache
    cache_dir: Path | None = None      # the harness cache (lm-eval's request cache, ...)
