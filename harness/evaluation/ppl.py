"""Perplexity in the SparseGPT/Wanda protocol.

The evaluation text (rows joined with the corpus' joiner) is tokenized once and cut into
non-overlapping windows of a pinned `seq_len`; the ragged tail is dropped; ppl = exp(mean token
NLL over all windows). Each window predicts seq_len-1 tokens, so this equals the reference's
exp(sum(loss*seq_len)/(n*seq_len)).  `max_windows` caps the windows for quick presets (recorded).
C4 is cut at 256 x seq_len tokens, as the references' get_c4 does (`valenc[:, :256 * seqlen]`);
the cap is recorded as `protocol_windows`.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness.data import CORPORA, check_available, corpus, eval_text
from harness.hashing import sha256_text, sha256_tokens
from harness.record_schema import Evaluated, result, section

PROTOCOL = "sparsegpt-wanda-ppl"
PROTOCOL_VERSION = "1"


def tokenize_windows(tokenizer, text: str, seq_len: int, max_windows: int | None) -> torch.Tensor:
    windows, _ = tokenize_windows_counted(tokenizer, text, seq_len, max_windows)
    return windows


def tokenize_windows_counted(tokenizer, text: str, seq_len: int,
                             max_windows: int | None) -> tuple[torch.Tensor, int]:
    """The evaluated windows [n_windows, seq_len] and the count the whole text implies (what the
    protocol evaluates without a cap): both are recorded, so a short text cannot hide."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]          # [n_tokens]
    implied = ids.numel() // seq_len
    n = implied
    if max_windows is not None:
        n = min(n, int(max_windows))
    if n == 0:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    return ids[: n * seq_len].reshape(n, seq_len), implied               # [n_windows, seq_len]


@torch.no_grad()
def window_nll(model, windows: torch.Tensor, batch_size: int, device: str, progress: bool = True,
               desc: str = "ppl") -> tuple[float, int]:
    """Sum of token NLL (float64) and number of predicted tokens over `windows` [n, seq]."""
    total, count = 0.0, 0
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress,
                      leave=False):
        batch = windows[start:start + batch_size].to(device)             # [b, seq]
        logits = model(batch, use_cache=False).logits                    # [b, seq, vocab]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                               batch[:, 1:].reshape(-1), reduction="sum")
        total += float(loss.double())
        count += batch[:, 1:].numel()
    return total, count


@torch.no_grad()
def window_nll_blockwise(model, windows: torch.Tensor, batch_size: int, device: str) -> tuple[float, int]:
    """`window_nll` computed block by block: every window goes through block i (onloaded once,
    harness.offload) before block i+1 is read; then the final norm and the head. The same
    operations on the same micro-batches as the model's forward, so the same numbers."""
    from harness.blocks.capture import capture_block_inputs, run_block
    from harness.offload import session

    adapter = model._prunebench_residency.adapter
    inputs = capture_block_inputs(model, adapter, windows, batch_size, device)
    for block in adapter.blocks(model):
        with session(model, block):
            inputs = inputs.advance(run_block(block, adapter, inputs))
    norm, head = adapter._get(model, adapter.final_norm), adapter.head(model)
    total, count = 0.0, 0
    with session(model, norm, head):
        for k, start in enumerate(range(0, windows.shape[0], batch_size)):
            batch = windows[start:start + batch_size].to(device)             # [b, seq]
            logits = head(norm(inputs.hidden[k]))                            # [b, seq, vocab]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   batch[:, 1:].reshape(-1), reduction="sum")
            total += float(loss.double())
            count += batch[:, 1:].numel()
    return total, count


# Layouts whose logits are exactly head(final_norm(hidden)) (no logit soft-capping or scaling,
# no output projection), so block-by-block evaluation gives the same numbers as the model's forward.
BLOCKWISE_FAMILIES = ("llama", "mistral", "qwen2")


def _blockwise(model) -> bool:
    """Offloaded models of a LLaMA layout (final norm then head) are evaluated block by block."""
    r = getattr(model, "_prunebench_residency", None)
    return r is not None and r.mode != "none" and r.adapter.family in BLOCKWISE_FAMILIES


def perplexity(model, tokenizer, text: str, seq_len: int, batch_size: int = 1, max_windows: int | None = None,
               device: str = "cpu", progress: bool = True, desc: str = "ppl") -> dict:
    t0 = time.perf_counter()
    windows, implied = tokenize_windows_counted(tokenizer, text, seq_len, max_windows)
    if _blockwise(model):
        nll, count = window_nll_blockwise(model, windows, batch_size, device)
    else:
        nll, count = window_nll(model, windows, batch_size, device, progress, desc)
    elapsed = time.perf_counter() - t0
    value = math.exp(nll / count)
    return {"value": value, "protocol": PROTOCOL, "protocol_version": PROTOCOL_VERSION,
            "seq_len": seq_len, "n_windows": int(windows.shape[0]), "n_windows_implied": implied,
            "max_windows": max_windows,
            "n_tokens": count, "nll_sum": nll, "batch_size": batch_size,
            "text_sha256": sha256_text(text), "tokens_sha256": sha256_tokens(windows),
            "eval_s": elapsed, "tokens_per_s": windows.numel() / elapsed, "blockwise": _blockwise(model)}


# Keys of the section that are token lengths: validation holds them to the model's positions.
LENGTH_KEYS = ("seq_len",)


def evaluated_texts(section: dict) -> list[tuple[str, str]]:
    """(corpus, split) of every text the section scores (the corpus' evaluation split unless
    `split` names another): calibration and recovery must never train on them."""
    return [(ds, section.get("split") or corpus(ds).eval_split) for ds in section.get("datasets") or []]


def check(section: dict, data_dir, device: str) -> None:
    """Validation: every scored text is a known corpus available offline (a one-line DataError)."""
    for ds, split in evaluated_texts(section):
        check_available(ds, split, data_dir)


def declare(results: dict):
    """Per dataset: the perplexity (lower is better), quoted with the window length and the number
    of windows evaluated, which differ between datasets (C4 is capped, WikiText-2 is not)."""
    return section(PROTOCOL, PROTOCOL_VERSION, "ppl", [
        result(f"ppl {name}", [name, "value"], False, quality=True, header=name,
               settings={"seq_len": r["seq_len"], "n_windows": r["n_windows"]})
        for name, r in results.items()])


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    """cfg: {datasets: [wikitext2, ...], split: null (corpus default), seq_len, max_windows, batch_size}"""
    results = {}
    for name in cfg["datasets"]:
        text, rows = eval_text(name, cfg.get("split"), ctx.data_dir)
        cap = CORPORA[name].eval_windows if name in CORPORA else None
        limit = cfg.get("max_windows")
        if cap:                 # the protocol's own cap; a quick preset may cut further
            limit = min(int(limit), cap) if limit else cap
        r = perplexity(model, tokenizer, text, int(cfg["seq_len"]), int(cfg.get("batch_size", 1)),
                       limit, ctx.device, desc=f"ppl/{name}")
        r["max_windows"] = cfg.get("max_windows")
        r["protocol_windows"] = cap
        r.update({"dataset": name, "split": rows.split, "data_source": rows.source,
                  "data_sha256": rows.sha256, "data_variant": rows.variant})
        if not math.isfinite(r["value"]):
            raise FloatingPointError(f"perplexity on {name} is not finite ({r['value']})")
        results[name] = r
    return Evaluated("ppl", results, declare(results))
