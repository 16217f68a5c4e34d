"""Wanda: prune by |W_ij| * ||X_j||_2, compared within each output row.

Paper: Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language
Models" (ICLR 2024), arXiv:2306.11695.
Reference: https://github.com/locuslab/wanda (lib/prune.py: prune_wanda, lib/layerwrapper.py).
Differences: ||X_j|| accumulates sum of squares over all tokens divided by the number of
sequences (the reference keeps a running mean; equal up to float rounding). Exact-k per row with
a stable sort, as the reference. The optional `use_variant` (Wanda's adaptive alpha search) is not
implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.blocks.masks import wanda_score
from methods.base import WeightPruner
from methods.registry import register
from methods.tags import Tags


@register
@dataclass
class Wanda(WeightPruner):
    name: ClassVar[str] = "wanda"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Sun et al. 2024 (ICLR), arXiv:2306.11695"
    listed: ClassVar[str] = "https://arxiv.org/abs/2306.11695"
    reference: ClassVar[str] = "https://github.com/locuslab/wanda"
    differences: ClassVar[str] = "norm accumulated as a plain sum (not a running mean); no variant search"
    tags: ClassVar[Tags] = Tags("Un/Semi-structured", "Wanda", "Sparsity-layer", "Calibration", "Without",
                                "Frozen", qualifier="per-output, N:M capable")
    statistics: ClassVar[tuple[str, ...]] = ("input_norm",)
    comparison_group: ClassVar[str] = "row"

    def score(self, weight: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        return wanda_score(weight, stats["input_norm"])
