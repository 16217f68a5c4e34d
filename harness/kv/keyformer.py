"""Keyformer: keep "key tokens" by a Gumbel-regularised accumulated attention score plus a recent window.

Paper: Adnan et al., "Keyformer: KV Cache Reduction through Key Tokens Selection for Efficient
Generative Inference" (MLSys 2024), arXiv:2403.09054.
Reference: https://github.com/d-matrix-ai/keyformer-llm (the score function
softmax((logits + gumbel) / tau), accumulated over steps; recent window always kept).
Differences: tau is a constant (the paper anneals it from tau_init to tau_end over the generation
length, which the chunked-perplexity protocol does not have); the unnormalised logits are
recovered from the captured probabilities as log p (softmax is shift-invariant per row, so
softmax((log p + g)/tau) == softmax((z + g)/tau)); per-KV-head scores (GQA), eviction per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.kv.policy import ScoreKVPolicy, kv_tags


@dataclass
class Keyformer(ScoreKVPolicy):
    tau: float = 1.0          # Gumbel-softmax temperature
    noise_seed: int = 0       # Gumbel noise generator seed (recorded; results depend on it)

    name: ClassVar[str] = "keyformer"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Adnan et al. 2024 (MLSys), arXiv:2403.09054"
    listed: ClassVar[str] = "https://arxiv.org/abs/2403.09054"
    reference: ClassVar[str] = "https://github.com/d-matrix-ai/keyformer-llm"
    differences: ClassVar[str] = ("constant tau (no annealing); logits recovered as log p; per-KV-head "
                                  "scores; eviction per chunk; original positions kept")
    tags = kv_tags("Other", "Gumbel-softmax key tokens + recent window")

    def __post_init__(self):
        super().__post_init__()
        if not self.tau > 0:
            raise ValueError("keyformer: tau must be > 0")

    def contribution(self, attn, state):
        if state.generator is None or state.generator.device != attn.device:
            state.generator = torch.Generator(device=attn.device).manual_seed(int(self.noise_seed) + state.seed)
        logp = attn.float().clamp_min(0).log()                                   # [b, qh, q, k]; masked -> -inf
        u = torch.rand(logp.shape, generator=state.generator, device=attn.device).clamp_(1e-10, 1 - 1e-10)
        gumbel = -torch.log(-torch.log(u))
        return torch.softmax((logp + gumbel) / self.tau, dim=-1)
