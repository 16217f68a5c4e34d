"""Shared KV-cache machinery: cache byte accounting, attention-score capture, eviction on
transformers DynamicCache layers, the KV-policy base class, and the bounded-cache runner used by
the KV evaluators (chunked perplexity, generation). KV-cache methods (methods/h2o.py, ...) only
implement how to score and pick tokens."""
