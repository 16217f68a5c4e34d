"""Shared KV-cache machinery: cache byte accounting, attention-score capture, eviction on
transformers DynamicCache layers, the KV-policy base class, and the bounded-cache runner used by
the KV evaluators (chunked perplexity, generation). KV-cache methods (methods/h2o.py, ...) only
implement how to score and pick tokens.

Why not kvpress (the field's library of presses): kvpress 0.5.5 requires transformers<5.3 and
installing it would downgrade the pinned transformers 5.23; its presses also compress once after a
single full-prompt forward, while the bounded-cache protocol here evicts after every chunk and
every generated token. We follow its conventions (per-KV-head scores under GQA, kept tokens keep
their positions)."""
