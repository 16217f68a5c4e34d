"""The bounded-cache protocol: the model never sees a sequence in one forward. Tokens are fed in
chunks through a DynamicCache; after each chunk (each token when generating) every layer's cache is
evicted to the policy's capacity. Perplexity is then the NLL of each chunk's predictions given the
bounded cache; with no policy (full cache) it equals the plain full-forward perplexity up to float
rounding (tested).

Eviction happens after a chunk, so during one forward the cache holds up to capacity + chunk
tokens (chunk=1 is the per-token eviction of the papers; larger chunks trade fidelity for speed).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from harness.kv.cache import cache_bytes, cache_layers, cache_tokens, gather_layer, kv_geometry
from harness.kv.capture import capture_attention

PROTOCOL = "bounded-cache-chunked-ppl"
PROTOCOL_VERSION = "1"


class BoundedCacheRunner:
    def __init__(self, model, adapter, policy=None, capacity: int | None = None, seed: int = 0):
        from transformers import DynamicCache

        self.model, self.adapter, self.policy = model, adapter, policy
        self.capacity = capacity
        self.cache = DynamicCache(config=model.config)
        self.state = policy.new_state(seed) if policy is not None else None
        self.kv_heads = kv_geometry(model.config)["kv_heads"]
        self.pos = 0
        self.evictions = 0

    def _observe(self, layer: int, attn: torch.Tensor) -> None:
        self.policy.observe(self.state, layer, attn, self.kv_heads)

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids [b, c]; returns logits [b, c, vocab]; evicts afterwards."""
        b, c = ids.shape
        positions = torch.arange(self.pos, self.pos + c, device=ids.device).unsqueeze(0).expand(b, c)
        capture = (capture_attention(self.model, self.adapter, self._observe)
                   if self.policy is not None and self.policy.needs_attention else nullcontext())
        with capture:
            out = self.model(input_ids=ids, past_key_values=self.cache, position_ids=positions, use_cache=True)
        self.pos += c
        self.evict()
        return out.logits

    def evict(self) -> None:
        if self.policy is None or self.capacity is None:
            return
        for i, layer in enumerate(cache_layers(self.cache)):
            length = layer.keys.shape[-2]
            if length <= self.capacity:
                continue
            b, kvh = layer.keys.shape[:2]
            keep = self.policy.select(self.state, i, length, self.capacity, b, kvh, layer.keys.device)
            assert keep.shape[-1] == self.capacity, (keep.shape, self.capacity)
            gather_layer(layer, keep)
            self.state.gather(i, keep)
            self.evictions += 1

    def bytes(self) -> int:
        return cache_bytes(self.cache)

    def tokens(self) -> list[int]:
        return cache_tokens(self.cache)


def capacity_for(policy, context: int) -> int | None:
    return None if policy is None else policy.capacity(context)


@torch.no_grad()
def bounded_nll(model, adapter, windows: torch.Tensor, chunk: int, policy=None, device: str = "cpu",
                seed: int = 0) -> dict:
    """Sum of token NLL over windows [n, seq], each fed in chunks with the cache bounded by policy."""
    n, seq = windows.shape
    capacity = capacity_for(policy, seq)
    total, count, kv_bytes, kv_tokens, evictions = 0.0, 0, [], [], 0
    for w in range(n):
        ids = windows[w:w + 1].to(device)                                         # [1, seq]
        runner = BoundedCacheRunner(model, adapter, policy, capacity, seed + w)
        for start in range(0, seq, chunk):
            stop = min(start + chunk, seq)
            logits = runner.step(ids[:, start:stop])                                # [1, c, vocab]
            targets = ids[:, start + 1:stop + 1]                                    # next tokens
            logits = logits[:, : targets.shape[1]]
            if targets.numel():
                total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                               reduction="sum").double())
                count += targets.numel()
        kv_bytes.append(runner.bytes())
        kv_tokens.append(max(runner.tokens()))
        evictions += runner.evictions
    return {"nll_sum": total, "n_tokens": count, "kv_bytes_final": max(kv_bytes), "kv_tokens_final": max(kv_tokens),
            "capacity": capacity, "evictions": evictions}


@torch.no_grad()
def generate_bounded(model, adapter, prompt: torch.Tensor, new_tokens: int, policy=None, chunk: int = 64,
                     capacity: int | None = None, seed: int = 0) -> tuple[torch.Tensor, BoundedCacheRunner]:
    """Greedy generation: prompt [b, L] fed in chunks, then `new_tokens` one at a time, the cache
    evicted to capacity (default: the policy's capacity for the prompt length) after every step."""
    capacity = capacity if capacity is not None else capacity_for(policy, prompt.shape[1])
    runner = BoundedCacheRunner(model, adapter, policy, capacity, seed)
    logits = None
    for start in range(0, prompt.shape[1], chunk):
        logits = runner.step(prompt[:, start:start + chunk])
    out = []
    nxt = logits[:, -1].argmax(-1, keepdim=True)                                    # [b, 1]
    for _ in range(new_tokens):
        out.append(nxt)
        logits = runner.step(nxt)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
    return (torch.cat(out, dim=1) if out else prompt[:, :0]), runner


def bounded_perplexity(model, adapter, windows: torch.Tensor, chunk: int, policy=None, device: str = "cpu",
                       seed: int = 0) -> dict:
    t0 = time.perf_counter()
    r = bounded_nll(model, adapter, windows, chunk, policy, device, seed)
    r["value"] = math.exp(r["nll_sum"] / r["n_tokens"])
    r.update({"protocol": PROTOCOL, "protocol_version": PROTOCOL_VERSION, "chunk": chunk,
              "seq_len": int(windows.shape[1]), "n_windows": int(windows.shape[0]),
              "eval_s": time.perf_counter() - t0})
    return r
