"""Attention-score capture: forward hooks on each block's attention module collect the attention
probabilities it returns (transformers' eager attention returns `(attn_output, attn_weights)` with
weights [batch, q_heads, q_len, kv_len]; SDPA/flash return None, so capture switches the model to
eager for its duration and restores the previous implementation)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch


def _set_attn(model, impl: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:  # older transformers: the attention layers read the shared config
        model.config._attn_implementation = impl


@contextmanager
def eager_attention(model):
    previous = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if previous != "eager":
        _set_attn(model, "eager")
    try:
        yield
    finally:
        if previous != "eager":
            _set_attn(model, previous)


@contextmanager
def capture_attention(model, adapter, sink: Callable[[int, torch.Tensor], None]):
    """Calls sink(layer_idx, attn_probs [b, q_heads, q, kv]) after each attention forward."""
    handles = []

    def hook_for(i: int):
        def hook(_module, _args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError("attention module returned no weights; capture needs eager attention")
            sink(i, weights.detach())
        return hook

    with eager_attention(model):
        try:
            for i, block in enumerate(adapter.blocks(model)):
                handles.append(adapter.attention(block).register_forward_hook(hook_for(i)))
            yield
        finally:
            for h in handles:
                h.remove()
