"""Evaluators, looked up by the name of their section under `eval:` in the config.

Each evaluator is `fn(model, tokenizer, section: dict, ctx: EvalContext) -> dict` and returns the
metrics it measured, each carrying its protocol name and version. Adding an evaluation = one
module + one entry in EVALUATORS (no if/elif in the runner).
"""

from __future__ import annotations

import importlib
from typing import Callable

# name -> "module:function", imported lazily so `harness` has no import-time cost.
EVALUATORS: dict[str, str] = {
    "ppl": "harness.evaluation.ppl:evaluate",
    "zeroshot": "harness.evaluation.zeroshot:evaluate",
    "latency": "harness.evaluation.latency:evaluate",
    "kv_memory": "harness.evaluation.kv_memory:evaluate",
    "kv_ppl": "harness.evaluation.kv_ppl:evaluate",
}


def get_evaluator(name: str) -> Callable:
    if name not in EVALUATORS:
        raise KeyError(f"unknown evaluation {name!r}; known: {', '.join(sorted(EVALUATORS))}")
    module, func = EVALUATORS[name].split(":")
    return getattr(importlib.import_module(module), func)
