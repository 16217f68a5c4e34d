"""KV-cache memory at a fixed context during generation.

A prompt of `context` tokens (WikiText-2 test, or seeded random ids on a tiny model) is prefilled in
chunks, then `new_tokens` are generated greedily, with the run's KV policy (if any) evicting after
every step. Reported: the measured bytes of the DynamicCache key/value tensors, the analytic full
cache 2 x layers x kv_heads x head_dim x tokens x bytes (SmolLM2-135M: 30 x 3 x 64 -> 22.5 KiB/token
in bf16, 45 KiB in fp32), their ratio, and peak memory (CUDA: max_memory_allocated during the
measurement; CPU: the process' peak RSS, which includes everything the process ever held)."""

from __future__ import annotations

import resource
import time

import torch

from harness.adapters import adapter_for
from harness.kv.bounded import generate_bounded
from harness.kv.cache import analytic_kv_bytes, kv_geometry
from harness.record_schema import Evaluated, result, section

PROTOCOL = "kv-memory-generation"
PROTOCOL_VERSION = "1"


def prompt_ids(tokenizer, context: int, data_dir, source: str, seed: int) -> torch.Tensor:
    if source == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, len(tokenizer), (1, context), generator=g)
    from harness.data import eval_text

    text, _ = eval_text(source, None, data_dir)
    ids = tokenizer(text[: context * 20], return_tensors="pt")["input_ids"][:, :context]
    if ids.shape[1] < context:
        raise ValueError(f"{source} gave {ids.shape[1]} tokens, fewer than context={context}")
    return ids


def measure(model, tokenizer, context: int, new_tokens: int, policy=None, chunk: int = 64, device: str = "cpu",
            source: str = "random", data_dir=None, seed: int = 0) -> dict:
    ids = prompt_ids(tokenizer, context, data_dir, source, seed).to(device)
    dtype = next(model.parameters()).dtype
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    _, runner = generate_bounded(model, adapter_for(model), ids, new_tokens, policy, chunk=chunk,
                                 capacity=policy.capacity(context) if policy is not None else None, seed=seed)
    elapsed = time.perf_counter() - t0
    measured = runner.bytes()
    tokens_seen = context + new_tokens
    held = max(runner.tokens())
    g = kv_geometry(model.config)
    r = {"protocol": PROTOCOL, "protocol_version": PROTOCOL_VERSION, "context": context, "new_tokens": new_tokens,
         "prompt_source": source, "dtype": str(dtype).replace("torch.", ""), **g,
         "kv_policy": policy.name if policy is not None else "none",
         "capacity": policy.capacity(context) if policy is not None else None,
         "tokens_seen": tokens_seen, "tokens_held": held,
         "kv_bytes_measured": measured,
         "kv_bytes_analytic_held": analytic_kv_bytes(model.config, held, dtype),
         "kv_bytes_full_analytic": analytic_kv_bytes(model.config, tokens_seen, dtype),
         "bytes_per_token": analytic_kv_bytes(model.config, 1, dtype),
         "elapsed_s": elapsed}
    r["kv_fraction_of_full"] = measured / r["kv_bytes_full_analytic"]
    if cuda:
        r["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        r["peak_cuda_bytes_above_start"] = r["peak_cuda_bytes"] - base
    else:
        r["peak_rss_bytes_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return r


def check(section: dict, data_dir, device: str) -> None:
    """Validation: a prompt `source` other than random is a known corpus whose evaluation split is
    available offline (a one-line DataError), found before the model loads rather than at evaluation."""
    from harness.data import check_available, corpus

    source = section.get("source", "wikitext2")
    if source != "random":
        check_available(source, corpus(source).eval_split, data_dir)


def declare(values: dict):
    """The measured KV bytes (as MiB) and their fraction of the full cache, both lower is better, at
    the context + generated tokens of the run; quoted settings: context length and dtype."""
    at = f"at {values['context']}+{values['new_tokens']} tokens"
    return section(PROTOCOL, PROTOCOL_VERSION, "kv", [
        result(f"KV MiB {at}", ["kv_bytes_measured"], False, quality=False, header="KV MiB measured",
               scale=1 / 2**20),
        result(f"KV fraction of full {at}", ["kv_fraction_of_full"], False, quality=False, headline=False,
               header="KV fraction")],
        settings={"context": values["context"], "dtype": values["dtype"]})


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    """cfg: {context, new_tokens, chunk, source: wikitext2|random}"""
    values = measure(model, tokenizer, int(cfg.get("context", 512)), int(cfg.get("new_tokens", 16)), ctx.kv,
                     int(cfg.get("chunk", 64)), ctx.device, cfg.get("source", "wikitext2"), ctx.data_dir, ctx.seed)
    return Evaluated("kv_memory", values, declare(values))
