"""Bounded-cache perplexity: WikiText-2 (or any ppl corpus) windows fed in chunks through a
DynamicCache evicted to the KV policy's capacity after each chunk (harness.kv.bounded). The policy
comes from the run's `kv` config group (ctx.kv); none = the full cache, which equals the
plain perplexity. Reports the KV bytes and tokens held at the end of each window next to the
analytic full-cache bytes for the same context.

Its texts, lengths and validation check (`evaluated_texts`, `LENGTH_KEYS`, `check`) are ppl's: the
same corpora cut into the same windows."""

from __future__ import annotations

from harness.adapters import adapter_for
from harness.data import eval_text
from harness.evaluation.ppl import LENGTH_KEYS, check, evaluated_texts, tokenize_windows  # noqa: F401
from harness.kv.bounded import PROTOCOL, PROTOCOL_VERSION, bounded_perplexity
from harness.kv.cache import analytic_kv_bytes
from harness.record_schema import Evaluated, result, section


def declare(results: dict):
    """Per dataset: the bounded-cache perplexity (lower is better), quoted with the window length,
    the number of windows and the chunk fed between evictions."""
    return section(PROTOCOL, PROTOCOL_VERSION, "kv_ppl", [
        result(f"bounded-cache ppl {name}", [name, "value"], False, quality=True, header=name,
               settings={"seq_len": r["seq_len"], "n_windows": r["n_windows"], "chunk": r["chunk"]})
        for name, r in results.items()])


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    """cfg: {datasets: [wikitext2], seq_len, max_windows, chunk}"""
    policy = ctx.kv
    dtype = next(model.parameters()).dtype
    results = {}
    for name in cfg.get("datasets", ["wikitext2"]):
        text, rows = eval_text(name, cfg.get("split"), ctx.data_dir)
        windows = tokenize_windows(tokenizer, text, int(cfg["seq_len"]), cfg.get("max_windows"))
        r = bounded_perplexity(model, adapter_for(model), windows, int(cfg.get("chunk", 32)), policy,
                               ctx.device, ctx.seed)
        full = analytic_kv_bytes(model.config, windows.shape[1], dtype)
        r.update({"dataset": name, "split": rows.split, "data_sha256": rows.sha256,
                  "max_windows": cfg.get("max_windows"), "kv_policy": policy.name if policy else "none",
                  "kv_bytes_full_analytic": full, "kv_fraction": r["kv_bytes_final"] / full})
        results[name] = r
    return Evaluated("kv_ppl", results, declare(results))
