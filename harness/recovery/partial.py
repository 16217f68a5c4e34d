"""Partial-layer fine-tuning: train only the last k blocks (or a named subset of parameters).

"Reassessing Layer Pruning in LLMs: New Insights and Methods" (Lu et al. 2024, arXiv:2411.15558):
after removing layers, fine-tuning only the last few remaining layers (and lm_head) recovers as much
as LoRA at lower cost. Here `last_k` blocks are trained with the causal-LM loss; `blocks` names
explicit block indices (of the pruned model) and `include` adds parameters by regular expression
(e.g. "lm_head|model.norm"). Pruned weights are kept at zero after every optimizer step.
"""

from __future__ import annotations

import re

from harness.recovery.train import (apply_masks, block_prefixes, finish, last_blocks, set_eval_mode, set_train_mode,
                                    start, train)
from harness.errors import ConfigError

OWN_KEYS = {"last_k", "blocks", "include"}


def check(params: dict) -> None:
    """This recovery's own keys; the shared budget is parsed once, by harness.recovery.check_recovery."""
    if params.get("blocks") is None and params.get("last_k") is None and not params.get("include"):
        raise ConfigError("recovery partial: set last_k, blocks or include")
    if params.get("last_k") is not None and int(params["last_k"]) < 1:
        raise ConfigError("recovery partial: last_k must be >= 1")
    if params.get("include"):
        try:
            re.compile(params["include"])
        except re.error as exc:
            raise ConfigError(f"recovery partial: include is not a regular expression: {exc}") from None


def select_blocks(n_blocks: int, params: dict) -> list[int]:
    if params.get("blocks") is not None:
        chosen = sorted({int(i) % n_blocks for i in params["blocks"]})
        bad = [i for i in params["blocks"] if not -n_blocks <= int(i) < n_blocks]
        if bad:
            raise ConfigError(f"recovery partial: block indices {bad} outside the model's {n_blocks} blocks")
        return chosen
    if params.get("last_k") is None:
        return []
    return last_blocks(n_blocks, int(params["last_k"]))


def recover(model, tokenizer, params: dict, ctx) -> dict:
    check(params)
    s = start(model, tokenizer, params, ctx, OWN_KEYS, "partial")
    blocks = ctx.adapter.blocks(model)
    chosen = select_blocks(len(blocks), params)
    prefixes = block_prefixes(ctx.adapter, chosen)
    pattern = re.compile(params["include"]) if params.get("include") else None
    trainable = {n: p for n, p in model.named_parameters()
                 if n.startswith(prefixes) or (pattern is not None and pattern.search(n))}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    set_train_mode(model, s.budget)

    def loss_fn(x):  # x: [batch, seq_len]
        return model(input_ids=x, labels=x).loss

    masks = {n: m for n, m in s.masks.items() if n in trainable}
    stats = train(trainable, loss_fn, s.corpus.train, s.budget, ctx.checkpoint_dir, "partial",
                  after_step=lambda _step: apply_masks(model, masks), device=ctx.device)
    set_eval_mode(model, s.budget)
    s.report |= stats | {"partial": {"blocks": chosen, "include": params.get("include"),
                                     "trainable_tensors": sorted(trainable)[:64] if len(trainable) <= 64
                                     else f"{len(trainable)} tensors"}}
    return finish(model, s, ctx)
