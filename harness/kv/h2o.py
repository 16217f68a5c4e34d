"""H2O: Heavy-Hitter Oracle - keep the tokens with the largest accumulated attention plus a recent window.

Paper: Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
Models" (NeurIPS 2023), arXiv:2306.14048.
Reference: https://github.com/FMInference/H2O (h2o_hf/utils_lm_eval/modify_llama.py: the
heavy-hitter mask from the attention weights summed over queries).
Differences: scores are accumulated per KV head (GQA: summed over the query heads of the group,
like kvpress) instead of per attention head; eviction runs after each chunk of the bounded-cache
protocol (chunk=1 is the paper's per-token eviction); kept tokens keep their original positions;
the budget is `budget` x context (heavy hitters) + `window` recent tokens, where the reference
splits one ratio between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.kv.policy import ScoreKVPolicy, kv_tags


@dataclass
class H2O(ScoreKVPolicy):
    name: ClassVar[str] = "h2o"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Zhang et al. 2023 (NeurIPS), arXiv:2306.14048"
    listed: ClassVar[str] = "https://arxiv.org/abs/2306.14048"
    reference: ClassVar[str] = "https://github.com/FMInference/H2O"
    differences: ClassVar[str] = ("per-KV-head accumulated attention (GQA); eviction per chunk; original "
                                  "positions kept; budget = heavy fraction + recent window")
    tags = kv_tags("Other", "accumulated attention + recent window")

    def contribution(self, attn, state):
        return attn   # accumulated attention probability each key receives
