"""Recovery after pruning (the fourth grid axis), looked up by `recovery.name`.

Each entry is a module with `recover(model, tokenizer, params: dict, ctx: RecoveryContext) -> dict`
(report for the record), optionally `check(params)` (called during config validation) and
`OWN_KEYS` (its config keys beside the shared budget). `none` does nothing. Shared machinery
(corpus, masks, resumable loop) is in harness/recovery/train.py, the shared budget in
harness/recovery/budget.py.
"""

from __future__ import annotations

from typing import Callable

from harness.registry import Registry

# name (== conf/recovery/<name>.yaml) -> module, imported on first use (training pulls in peft)
RECOVERIES: Registry = Registry("recovery", {
    "none": None,
    "lora": "harness.recovery.lora",
    "partial": "harness.recovery.partial",
    "kd": "harness.recovery.kd",
    "replace": "harness.recovery.replace",
    "qat": "harness.recovery.qat",
    "continued": "harness.recovery.continued",
})


def get_recovery(name: str) -> Callable | None:
    module = RECOVERIES.get(name)
    return None if module is None else module.recover


def check_recovery(params: dict, eval_texts: list[tuple[str, str]], data_dir=None):
    """Validation-time checks (budget, corpus != evaluation text); raises a one-line ConfigError.
    Returns the parsed training budget (harness.recovery.budget.Budget; None for recovery=none), which
    the run hands to the recovery through its context instead of parsing it again."""
    name = params.get("name", "none")
    module = RECOVERIES.get(name)
    if module is None:
        return None
    from harness.recovery.budget import check_not_eval_text, parse_budget

    budget = parse_budget(params, getattr(module, "OWN_KEYS", set()), name)   # first: unknown keys, bad values
    check = getattr(module, "check", None)
    if check is not None:
        check(params)
    check_not_eval_text(budget, eval_texts, name)
    if not budget.corpus.startswith("hf:"):
        from harness.data import check_available

        check_available(budget.corpus, budget.split, data_dir)
    return budget
