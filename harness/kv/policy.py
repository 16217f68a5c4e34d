"""KV-cache policies (the `kv` axis, registered in harness.kv.POLICIES): they leave the weights
alone and bound the KV cache at inference. A policy keeps `capacity = selected + window` tokens per layer and KV head: the most
recent `window` tokens always, plus `selected` tokens it picks (budget: a fraction of the context
length when < 1, else a token count). The runner (harness.kv.bounded) feeds attention
probabilities to `observe` and asks `select` which cached positions survive eviction.

Kept tokens keep the RoPE positions they were cached with (no position re-indexing), as kvpress
does; StreamingLLM's paper re-indexes positions inside the cache (see harness/kv/streaming_llm.py).

A policy carries the same card as a method (harness.card: paper, reference, differences, tags,
`describe`) but is not a method: it is chosen on the `kv` axis (`kv=h2o`, on top of any method,
`method=dense` for the unchanged weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.card import Card
from harness.tags import Tags

# H2O's and Keyformer's badges on the Awesome-LLMs-Pruning list (criteria "Other" there too)
KV_TAGS = dict(type="Other", budget="Sparsity-KV cache", data="Data free", retrain="Without", weights="Frozen")


def kv_tags(criteria: str, qualifier: str = "") -> Tags:
    return Tags(criteria=criteria, qualifier=qualifier, **KV_TAGS)


class KVState:
    """Per-layer running scores aligned with the cache: scores[layer] is [batch, kv_heads, cached]."""

    def __init__(self, seed: int = 0):
        self.scores: dict[int, torch.Tensor] = {}
        self.seed = seed
        self.generator: torch.Generator | None = None

    def gather(self, layer: int, keep: torch.Tensor) -> None:
        if layer in self.scores:
            self.scores[layer] = torch.gather(self.scores[layer], 2, keep)


@dataclass
class KVPolicy(Card):
    """Base of the KV-cache policies. Subclasses set `needs_attention` and implement `select`
    (and `contribution` when they accumulate attention-derived scores)."""

    budget: float = 0.2
    window: int = 32

    needs_attention: ClassVar[bool] = False

    def __post_init__(self):
        if not self.budget > 0:
            raise ValueError(f"{self.name}: budget must be > 0 (fraction < 1 or a token count), got {self.budget}")
        if self.budget >= 1 and float(self.budget) != int(self.budget):
            raise ValueError(f"{self.name}: a budget >= 1 is a token count and must be an integer")
        if int(self.window) < 0:
            raise ValueError(f"{self.name}: window must be >= 0")

    # -- cache -------------------------------------------------------------------------------------
    def selected_tokens(self, context: int) -> int:
        return int(round(self.budget * context)) if self.budget < 1 else int(self.budget)

    def capacity(self, context: int) -> int:
        """Tokens kept per layer and head once the cache has seen `context` tokens."""
        return self.selected_tokens(context) + int(self.window)

    def new_state(self, seed: int = 0) -> KVState:
        return KVState(seed)

    def contribution(self, attn: torch.Tensor, state: KVState) -> torch.Tensor | None:
        """Per-key score this step from attention probabilities [b, q_heads, q, kv] -> same shape."""
        return None

    def observe(self, state: KVState, layer: int, attn: torch.Tensor, kv_heads: int) -> None:
        contrib = self.contribution(attn, state)
        if contrib is None:
            return
        b, qh, q, k = contrib.shape
        per_kv = contrib.float().reshape(b, kv_heads, qh // kv_heads, q, k).sum(dim=(2, 3))   # [b, kvh, k]
        prev = state.scores.get(layer)
        if prev is not None:   # the chunk's new keys were appended after the cached ones
            per_kv[..., : prev.shape[-1]] += prev
        state.scores[layer] = per_kv

    def select(self, state: KVState, layer: int, length: int, capacity: int, batch: int, kv_heads: int,
               device) -> torch.Tensor:
        """Positions to keep, sorted ascending, [b, kv_heads, capacity] (length > capacity)."""
        raise NotImplementedError


@dataclass
class ScoreKVPolicy(KVPolicy):
    """Keep the recent window plus the top-scored older tokens (H2O, Keyformer)."""

    needs_attention: ClassVar[bool] = True

    def select(self, state, layer, length, capacity, batch, kv_heads, device):
        window = min(int(self.window), capacity)
        older = length - window
        scores = state.scores[layer][..., :older]                              # [b, kvh, older]
        top = scores.topk(capacity - window, dim=-1).indices                   # [b, kvh, selected]
        recent = torch.arange(older, length, device=device).expand(batch, kv_heads, window)
        return torch.cat([top, recent], dim=-1).sort(dim=-1).values
