"""Recovery after pruning (the fourth grid axis), looked up by `recovery.name`.

Each entry is "module:function" with signature
`fn(model, tokenizer, params: dict, ctx: RecoveryContext) -> dict` (report for the record).
`none` does nothing. The module may define `check(params)`, called during config validation.
Shared machinery (budget, corpus, masks, resumable loop) is in harness/recovery/train.py.
"""

from __future__ import annotations

import importlib
from typing import Callable

RECOVERIES: dict[str, str | None] = {
    "none": None,
    "lora": "harness.recovery.lora:recover",
    "partial": "harness.recovery.partial:recover",
    "kd": "harness.recovery.kd:recover",
    "replace": "harness.recovery.replace:recover",
}


def get_recovery(name: str) -> Callable | None:
    if name not in RECOVERIES:
        raise KeyError(f"unknown recovery {name!r}; known: {', '.join(sorted(RECOVERIES))}")
    target = RECOVERIES[name]
    if target is None:
        return None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def check_recovery(params: dict, eval_texts: list[tuple[str, str]], data_dir=None) -> None:
    """Validation-time checks (budget, corpus != evaluation text); raises a one-line ConfigError."""
    name = params.get("name", "none")
    target = RECOVERIES.get(name)
    if target is None:
        return
    from harness.recovery.train import check_not_eval_text, parse_budget

    module = importlib.import_module(target.split(":")[0])
    check = getattr(module, "check", None)
    if check is not None:
        check(params)
    budget = parse_budget(params, getattr(module, "OWN_KEYS", set()), name)
    check_not_eval_text(budget, eval_texts, name)
    if not budget.corpus.startswith("hf:"):
        from harness.data import check_available

        check_available(budget.corpus, budget.split, data_dir)
