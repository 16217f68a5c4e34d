"""Recovery after pruning (the fourth grid axis), looked up by `recovery.name`.

Each entry is "module:function" with signature
`fn(model, tokenizer, params: dict, ctx: RecoveryContext) -> dict` (report for the record).
`none` does nothing.
"""

from __future__ import annotations

import importlib
from typing import Callable

RECOVERIES: dict[str, str | None] = {"none": None}


def get_recovery(name: str) -> Callable | None:
    if name not in RECOVERIES:
        raise KeyError(f"unknown recovery {name!r}; known: {', '.join(sorted(RECOVERIES))}")
    target = RECOVERIES[name]
    if target is None:
        return None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)
