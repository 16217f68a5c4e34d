"""Shared KV-cache machinery: cache byte accounting, attention-score capture, eviction on
transformers DynamicCache layers, the KV-policy base class, and the bounded-cache runner used by
the KV evaluators (chunked perplexity, generation). The policies (h2o.py, keyformer.py,
streaming_llm.py, registered in POLICIES and chosen by the `kv` config group) only implement how
to score and pick tokens.

Why not kvpress (the field's library of presses): kvpress 0.5.5 requires transformers<5.3 and
installing it would downgrade the pinned transformers 5.23; its presses also compress once after a
single full-prompt forward, while the bounded-cache protocol here evicts after every chunk and
every generated token. We follow its conventions (per-KV-head scores under GQA, kept tokens keep
their positions)."""

from harness.registry import Registry


def _is_policy(name: str, cls) -> None:
    from harness.kv.policy import KVPolicy

    if not (isinstance(cls, type) and issubclass(cls, KVPolicy)) or cls.name != name:
        raise TypeError(f"KV policy {name!r} must be a KVPolicy subclass named {name!r}")


# name (== conf/kv/<name>.yaml) -> policy class, imported on first use. A policy is not a method:
# `method=h2o` is refused with a hint to use `kv=h2o` (harness.config on the command line,
# harness.validate for a composed config).
POLICIES: Registry = Registry("KV policy", {
    "h2o": "harness.kv.h2o:H2O",
    "keyformer": "harness.kv.keyformer:Keyformer",
    "streaming_llm": "harness.kv.streaming_llm:StreamingLLM",
}, check=_is_policy)
