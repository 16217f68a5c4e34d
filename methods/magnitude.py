"""Layer-wise magnitude pruning: |W|, compared over each whole weight matrix.

Paper: Han et al., "Learning both Weights and Connections for Efficient Neural Networks" (2015);
used as the baseline of SparseGPT and Wanda.
Reference: locuslab/wanda `prune_magnitude`.
Differences: the reference prunes every weight <= the sorted |W| at index k = int(numel*s), i.e.
k+1 weights (more on ties); this prunes exactly k (stable sort), so measured sparsity equals the
target exactly (tests/parity/test_weight_pruners.py checks that only that one weight differs). N:M keeps
the N largest |W| of each group of M inputs, as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import WeightPruner
from methods.registry import register
from methods.tags import Tags


@register
@dataclass
class Magnitude(WeightPruner):
    name: ClassVar[str] = "magnitude"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Han et al. 2015, arXiv:1506.02626"
    reference: ClassVar[str] = "https://github.com/locuslab/wanda (lib/prune.py: prune_magnitude)"
    differences: ClassVar[str] = "exactly k = int(numel*s) pruned per layer (the reference's <= threshold prunes k+1, more on ties)"
    tags: ClassVar[Tags] = Tags("Un/Semi-structured", "Magnitude", "Sparsity-layer", "Data free", "Without",
                                "Frozen", qualifier="layer-wise, N:M capable")
    needs_calibration: ClassVar[bool] = False
    comparison_group: ClassVar[str] = "layer"

    def score(self, weight: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        return weight.abs()
