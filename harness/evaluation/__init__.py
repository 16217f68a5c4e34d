"""Evaluators, looked up by the name of their section under `eval:` in the config.

Each evaluator is a module with
  evaluate(model, tokenizer, section: dict, ctx: EvalContext) -> Evaluated (harness.record_schema)
      the values it measured, stored at record["metrics"][<section>], and their declaration
      (protocol name, version and settings; per number whether higher is better and whether it is
      a result or a spread), stored at record["metric_declarations"][<section>];
  check(section: dict, data_dir, device: str) -> None
      its config checks, called by validation (harness.validate) before any model loads: a
      one-line ConfigError (DataError, TaskDataError, ...) for a section that cannot run;
and optionally
  evaluated_texts(section) -> [(corpus, split), ...]   the texts it scores, which calibration and
      recovery must never train on;
  LENGTH_KEYS   keys of its section that are token lengths, held to the model's positions.
Adding an evaluation = one module + one entry in EVALUATORS (harness.registry.Registry; no if/elif
in the runner or in validation).
"""

from __future__ import annotations

from harness.registry import Registry


def _has_evaluate_and_check(name: str, module) -> None:
    """Registry check on an entry once imported: validation and the run call both."""
    for attr in ("evaluate", "check"):
        if not callable(getattr(module, attr, None)):
            raise TypeError(f"evaluator {name!r} ({getattr(module, '__name__', module)}) lacks {attr}()")


# section name under `eval:` -> module, imported on first use so that choosing one evaluator never
# imports the others' dependencies (lm-eval, kernels).
EVALUATORS: Registry = Registry("eval section", {
    "ppl": "harness.evaluation.ppl",
    "ppl_prompted": "harness.evaluation.ppl_prompted",
    "zeroshot": "harness.evaluation.zeroshot",
    "latency": "harness.evaluation.latency",
    "kv_memory": "harness.evaluation.kv_memory",
    "kv_ppl": "harness.evaluation.kv_ppl",
    "accuracy": "harness.evaluation.accuracy",
}, check=_has_evaluate_and_check)

# Evaluators that build a KV cache, and so apply the run's `kv` policy; any other leaves it unused.
# In this order in the message that refuses a policy no evaluator would apply.
KV_CACHE_EVALUATORS = ("kv_ppl", "kv_memory")


def get_evaluator(name: str):
    """The `evaluate` function of the evaluator for section `name`."""
    return EVALUATORS.get(name).evaluate


def check_section(name: str, section: dict, data_dir, device: str) -> None:
    """Validation of one eval section: an unknown name is the registry's one-line error (near
    matches), a known one runs its evaluator's own check."""
    EVALUATORS.get(name).check(section, data_dir, device)


def evaluated_texts(eval_cfg: dict) -> tuple[tuple[str, str], ...]:
    """(corpus, split) of every text the run's eval sections score, in config order, each once."""
    texts: list[tuple[str, str]] = []
    for name, section in eval_cfg.items():
        module = EVALUATORS.get(name) if section else None
        for text in getattr(module, "evaluated_texts", lambda _: [])(section):
            if text not in texts:
                texts.append(text)
    return tuple(texts)


def length_keys(eval_cfg: dict) -> list[tuple[str, object]]:
    """("eval.<name>.<key>", value) of every token length the eval sections set (LENGTH_KEYS)."""
    out = []
    for name, section in eval_cfg.items():
        if isinstance(section, dict):
            keys = getattr(EVALUATORS.get(name), "LENGTH_KEYS", ())
            out += [(f"eval.{name}.{key}", section.get(key)) for key in keys]
    return out
