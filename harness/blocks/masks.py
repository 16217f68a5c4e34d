"""Mask helpers. A *keep mask* is a bool tensor shaped like the weight: True = weight survives.

Scores are "importance": higher means keep. All selections prune an exact count (ties broken by a
stable sort), so achieved sparsity equals the target to the element.
"""

from __future__ import annotations

import torch
from torch import nn


def keep_unstructured(score: torch.Tensor, sparsity: float, group: str = "row") -> torch.Tensor:
    """Prune the `sparsity` fraction with the lowest score.

    group="row": per output row (Wanda's comparison group), int(cols*sparsity) pruned in each row.
    group="layer": over the whole matrix (magnitude pruning's comparison group).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    keep = torch.ones_like(score, dtype=torch.bool)
    if group == "row":
        k = int(score.shape[1] * sparsity)
        if k:
            idx = torch.sort(score, dim=1, stable=True).indices[:, :k]  # [rows, k]
            keep.scatter_(1, idx, False)
    elif group == "layer":
        k = int(score.numel() * sparsity)
        if k:
            idx = torch.sort(score.flatten(), stable=True).indices[:k]
            keep.view(-1)[idx] = False
    else:
        raise ValueError(f"unknown comparison group {group!r}")
    return keep


def keep_nm(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of m consecutive inputs of a row keep the n highest scores."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"in_features={cols} is not a multiple of M={m}")
    groups = score.reshape(rows, cols // m, m)                      # [rows, groups, m]
    idx = torch.topk(groups, n, dim=-1, largest=True, sorted=False).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return keep.reshape(rows, cols)


def keep_for_target(score: torch.Tensor, sparsity: float, n: int | None, m: int | None,
                    group: str = "row") -> torch.Tensor:
    return keep_nm(score, n, m) if n is not None else keep_unstructured(score, sparsity, group)


@torch.no_grad()
def apply_keep_mask(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight.mul_(keep.to(linear.weight.dtype))


def nm_violations(weight: torch.Tensor, n: int, m: int) -> tuple[int, int]:
    """(groups with more than n non-zeros, total groups) along the input dimension."""
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"in_features={cols} is not a multiple of M={m}")
    nonzero = (weight.reshape(rows, cols // m, m) != 0).sum(-1)
    return int((nonzero > n).sum()), int(nonzero.numel())
