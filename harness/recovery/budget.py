"""The recovery budget every recovery type shares: what it trains on, for how long and how.

Parsed once at config validation (harness.recovery.check_recovery) and handed to the recovery
through its context, so a bad value is a one-line ConfigError before any model loads. Kept apart
from the training loop (harness.recovery.train) so that validation and run identity read the
budget without importing torch. conf/recovery/_budget.yaml holds the same defaults as Budget
(tests/unit/test_recovery.py checks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from harness.errors import ConfigError

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass(frozen=True)
class Budget:
    """Training budget and data, shared by every recovery type (all of it goes into the record)."""

    steps: int = 64
    tokens: int | None = None             # if set, steps = tokens / (batch_size * grad_accum * seq_len)
    batch_size: int = 4
    seq_len: int = 128
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"              # transformers.get_scheduler name
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    corpus: str = "c4"                    # harness.data corpus name, or "hf:<path>[:<name>]"
    split: str = "train"
    text_field: str = "text"              # for hf: corpora
    max_docs: int | None = None           # cap on documents read (large hub corpora)
    heldout_docs: int = 32                # last documents of the corpus, never trained on
    heldout_windows: int = 8
    seed: int = 0
    checkpoint_every: int = 0             # steps; 0 = no periodic checkpoints
    keep_checkpoints: bool = False        # keep the final checkpoint after a completed run
    stop_after: int | None = None         # simulate preemption: stop after this step (checkpointed)
    gradient_checkpointing: bool = False
    autocast: str | None = None           # "bfloat16": mixed precision over float32 weights (CUDA)
    keep_sparsity: bool = True            # pruned weights stay zero (masks re-applied)

    @property
    def windows_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def train_tokens(self) -> int:
        return self.steps * self.windows_per_step * self.seq_len

    def describe(self) -> dict:
        return asdict(self) | {"train_tokens": self.train_tokens}


BUDGET_KEYS = frozenset(f.name for f in fields(Budget))


def parse_budget(params: dict, own_keys: set[str], recovery: str) -> Budget:
    """Budget from the recovery config; unknown keys and bad values are one-line ConfigErrors."""
    unknown = set(params) - BUDGET_KEYS - own_keys - {"name"}
    if unknown:
        raise ConfigError(f"recovery {recovery}: unknown key(s) {', '.join(sorted(unknown))}")
    values = {k: params[k] for k in BUDGET_KEYS if k in params and params[k] is not None}
    try:
        for f in fields(Budget):  # YAML may give "1e-4" as a string; coerce to the field's type
            if f.name in values and f.type in ("int", "float", "int | None", "float | None"):
                values[f.name] = (float if "float" in f.type else int)(values[f.name])
        b = Budget(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"recovery {recovery}: bad budget value: {exc}") from None
    if b.tokens is not None:
        per_step = b.windows_per_step * b.seq_len
        if b.tokens % per_step:
            raise ConfigError(f"recovery {recovery}: tokens={b.tokens} is not a multiple of "
                              f"batch_size*grad_accum*seq_len={per_step}")
        if "steps" in params and params["steps"] is not None and int(params["steps"]) != b.tokens // per_step:
            raise ConfigError(f"recovery {recovery}: tokens={b.tokens} and steps={params['steps']} disagree "
                              f"(tokens gives {b.tokens // per_step} steps); set one of them")
        b = Budget(**(values | {"steps": b.tokens // per_step}))
    if b.steps < 1 or b.batch_size < 1 or b.seq_len < 2 or b.grad_accum < 1:
        raise ConfigError(f"recovery {recovery}: steps, batch_size, grad_accum must be >= 1 and seq_len >= 2")
    if not b.lr > 0:
        raise ConfigError(f"recovery {recovery}: lr must be > 0")
    if b.schedule not in SCHEDULES:
        raise ConfigError(f"recovery {recovery}: schedule must be one of {', '.join(SCHEDULES)}")
    if b.warmup_steps < 0 or b.warmup_steps >= b.steps and b.warmup_steps > 0:
        raise ConfigError(f"recovery {recovery}: warmup_steps must be in [0, steps)")
    if b.heldout_docs < 1 or b.heldout_windows < 1:
        raise ConfigError(f"recovery {recovery}: heldout_docs and heldout_windows must be >= 1")
    if b.stop_after is not None and not 1 <= b.stop_after < b.steps:
        raise ConfigError(f"recovery {recovery}: stop_after must be in [1, steps)")
    if b.autocast not in (None, "bfloat16", "float16"):
        raise ConfigError(f"recovery {recovery}: autocast must be null, bfloat16 or float16")
    if b.checkpoint_every < 0:
        raise ConfigError(f"recovery {recovery}: checkpoint_every must be >= 0")
    return b


def check_not_eval_text(b: Budget, eval_texts: list[tuple[str, str]], recovery: str) -> None:
    """Never train on evaluation text: the corpus/split must not be one the run (or the protocol) evaluates."""
    from harness.data import CORPORA

    if b.corpus in CORPORA:
        c = CORPORA[b.corpus]
        if b.split not in c.files:
            raise ConfigError(f"recovery {recovery}: corpus {b.corpus!r} has no split {b.split!r} "
                              f"(available: {', '.join(c.files)})")
        if b.split == c.eval_split:
            raise ConfigError(f"recovery {recovery}: {b.corpus}/{b.split} is the evaluation split of "
                              f"{b.corpus}; train on another split (e.g. c4/train)")
    elif not b.corpus.startswith("hf:"):
        raise ConfigError(f"recovery {recovery}: unknown corpus {b.corpus!r}; a harness.data corpus "
                          f"({', '.join(sorted(CORPORA))}) or hf:<dataset>[:<config>]")
    if (b.corpus, b.split) in {tuple(t) for t in eval_texts}:
        raise ConfigError(f"recovery {recovery}: {b.corpus}/{b.split} is evaluated by this run; never train on it")


