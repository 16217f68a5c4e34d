"""Perplexity with a prompt in front of every window (Compresso's inference-time collaborative prompt).

The windows are exactly those of the plain protocol (harness.evaluation.ppl: same text, seq_len,
cap); each is scored behind the prompt's tokens, [prompt ; window], and only the window's own
seq_len-1 next-token predictions count, so the number differs from the plain one by the context the
prompt gives and nothing else. This is another protocol: the plain `ppl` section stays the
leaderboard's comparable number (every other method is scored without a prompt), this one is a
declared non-headline section beside it. `prompt`: a name of harness.instructions.INFERENCE_PROMPTS
("train": the reference's prompt_mark 1, the default of its evaluation scripts; "eval": prompt_mark 2).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from harness.data import CORPORA, eval_text
from harness.errors import ConfigError
from harness.evaluation.ppl import check as plain_check
from harness.evaluation.ppl import evaluated_texts, tokenize_windows_counted   # noqa: F401  (re-exported)
from harness.hashing import sha256_tokens
from harness.record_schema import Evaluated, result, section

PROTOCOL = "sparsegpt-wanda-ppl+prompt"
PROTOCOL_VERSION = "1"
LENGTH_KEYS = ("seq_len",)


def check(section_cfg: dict, data_dir, device: str) -> None:
    from harness.instructions import INFERENCE_PROMPTS

    if section_cfg.get("prompt") not in INFERENCE_PROMPTS:
        raise ConfigError(f"eval ppl_prompted: prompt must be one of {', '.join(INFERENCE_PROMPTS)}")
    plain_check(section_cfg, data_dir, device)


@torch.no_grad()
def prompted_nll(model, windows: torch.Tensor, prefix: torch.Tensor, batch_size: int, device: str) -> tuple[float, int]:
    """Sum of token NLL over the windows' own predictions ([n, seq] windows behind prefix [p])."""
    total, count = 0.0, 0
    p = prefix.numel()
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)                        # [b, seq]
        x = torch.cat([prefix.to(device).expand(batch.shape[0], p), batch], 1)      # [b, p + seq]
        logits = model(x, use_cache=False).logits[:, p:-1]                          # [b, seq-1, vocab]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1),
                               reduction="sum")
        total += float(loss.double())
        count += batch[:, 1:].numel()
    return total, count


def declare(results: dict):
    """Per dataset: the prompted perplexity (lower is better), never a headline column."""
    return section(PROTOCOL, PROTOCOL_VERSION, "ppl_prompted", [   # its own group: never beside the plain ppl
        result(f"ppl {name} (prompt {r['prompt']})", [name, "value"], False, quality=True, headline=False,
               header=f"{name} +prompt", settings={"seq_len": r["seq_len"], "n_windows": r["n_windows"],
                                                   "prompt": r["prompt"], "prompt_tokens": r["prompt_tokens"]})
        for name, r in results.items()])


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    """cfg: {datasets, split, seq_len, max_windows, batch_size, prompt}"""
    from harness.instructions import INFERENCE_PROMPTS

    prompt = cfg["prompt"]
    prefix = torch.tensor(tokenizer(INFERENCE_PROMPTS[prompt])["input_ids"], dtype=torch.int64)   # [p]
    results = {}
    for name in cfg["datasets"]:
        text, rows = eval_text(name, cfg.get("split"), ctx.data_dir)
        cap = CORPORA[name].eval_windows if name in CORPORA else None
        limit = cfg.get("max_windows")
        if cap:
            limit = min(int(limit), cap) if limit else cap
        t0 = time.perf_counter()
        windows, implied = tokenize_windows_counted(tokenizer, text, int(cfg["seq_len"]), limit)
        nll, count = prompted_nll(model, windows, prefix, int(cfg.get("batch_size", 1)), ctx.device)
        value = math.exp(nll / count)
        if not math.isfinite(value):
            raise FloatingPointError(f"prompted perplexity on {name} is not finite ({value})")
        results[name] = {"value": value, "protocol": PROTOCOL, "protocol_version": PROTOCOL_VERSION,
                         "seq_len": int(cfg["seq_len"]), "n_windows": int(windows.shape[0]),
                         "n_windows_implied": implied, "max_windows": cfg.get("max_windows"), "n_tokens": count,
                         "nll_sum": nll, "prompt": prompt, "prompt_tokens": int(prefix.numel()),
                         "tokens_sha256": sha256_tokens(windows), "eval_s": time.perf_counter() - t0,
                         "dataset": name, "split": rows.split, "data_source": rows.source,
                         "data_sha256": rows.sha256, "data_variant": rows.variant}
    return Evaluated("ppl_prompted", results, declare(results))
