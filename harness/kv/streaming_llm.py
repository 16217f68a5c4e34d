"""StreamingLLM: keep the first `sink` tokens (attention sinks) and the most recent ones.

Paper: Xiao et al., "Efficient Streaming Language Models with Attention Sinks" (ICLR 2024),
arXiv:2309.17453.
Reference: https://github.com/mit-han-lab/streaming-llm (streaming_llm/kv_cache.py: StartRecentKVCache).
Differences: kept tokens keep their original RoPE positions (the reference re-indexes positions
inside the cache so that the sequence may exceed the trained length; within the context lengths
evaluated here the two agree on which tokens are kept). For a like-for-like cache size with H2O
and Keyformer the capacity is the same `budget` x context + `window`: `sink` tokens plus the most
recent capacity - sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.kv.policy import KVPolicy, kv_tags


@dataclass
class StreamingLLM(KVPolicy):
    sink: int = 4

    name: ClassVar[str] = "streaming_llm"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Xiao et al. 2024 (ICLR), arXiv:2309.17453"
    reference: ClassVar[str] = "https://github.com/mit-han-lab/streaming-llm"
    differences: ClassVar[str] = "original positions kept (no in-cache re-indexing); capacity matched to h2o"
    tags = kv_tags("Other", "attention sinks + recent window")

    def __post_init__(self):
        super().__post_init__()
        if int(self.sink) < 0:
            raise ValueError("streaming_llm: sink must be >= 0")

    def select(self, state, layer, length, capacity, batch, kv_heads, device):
        sink = min(int(self.sink), capacity)
        keep = torch.cat([torch.arange(sink, device=device),
                          torch.arange(length - (capacity - sink), length, device=device)])
        return keep.expand(batch, kv_heads, capacity)
