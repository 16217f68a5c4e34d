"""Evaluators, looked up by the name of their section under `eval:` in the config.

Each evaluator is `fn(model, tokenizer, section: dict, ctx: EvalContext) -> Evaluated`
(harness.record_schema): the values it measured, stored at record["metrics"][<section>], and their
declaration (protocol name, version and settings; per number whether higher is better and whether it
is a result or a spread), stored at record["metric_declarations"][<section>]. Adding an evaluation = one
module + one entry in EVALUATORS (harness.registry.Registry; no if/elif in the runner).
"""

from __future__ import annotations

from harness.registry import Registry

# section name under `eval:` -> "module:function", imported on first use so that choosing one
# evaluator never imports the others' dependencies (lm-eval, kernels).
EVALUATORS: Registry = Registry("eval section", {
    "ppl": "harness.evaluation.ppl:evaluate",
    "zeroshot": "harness.evaluation.zeroshot:evaluate",
    "latency": "harness.evaluation.latency:evaluate",
    "kv_memory": "harness.evaluation.kv_memory:evaluate",
    "kv_ppl": "harness.evaluation.kv_ppl:evaluate",
})


def get_evaluator(name: str):
    return EVALUATORS.get(name)
