"""Mask helpers. A *keep mask* is a bool tensor shaped like the weight: True = weight survives.

Scores are "importance": higher means keep. All selections prune an exact count (ties broken as a
stable sort breaks them), so achieved sparsity equals the target to the element.
"""

from __future__ import annotations

import torch
from torch import nn


def wanda_score(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """The Wanda score |W| [out, in] scaled by the input-channel norm ‖x‖ [in]: Wanda's criterion,
    OWL's outlier statistic, BESA's ranking and DSnoT's importance all read this one definition."""
    return weight.abs() * input_norm.reshape(1, -1)


def lowest_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask [rows, cols] of the k lowest scores of each row, ties taken in index order: exactly
    the first k of a stable ascending sort (what the references prune), without sorting.

    A selection (kthvalue, O(cols) per row) finds each row's k-th smallest value t; the mask is
    every score < t plus the first (k - #below) scores == t. On LLaMA-3-8B linear shapes this is
    2.0-2.8x faster than `torch.sort(stable=True)` (benchmarks/bench_prune_time.py --selection).
    NaN scores fall back to the sort (NaN sorts last there; kthvalue would not say so)."""
    cols = score.shape[1]
    if k <= 0:
        return torch.zeros_like(score, dtype=torch.bool)
    if k >= cols:
        return torch.ones_like(score, dtype=torch.bool)
    if torch.isnan(score).any():
        low = torch.zeros_like(score, dtype=torch.bool)
        return low.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :k], True)
    t = torch.kthvalue(score, k, dim=1, keepdim=True).values           # [rows, 1]
    low = score < t                                                     # [rows, cols]
    tie = score == t
    # ties in index order, as many as the k-th place still needs (>= 1 per row)
    need = k - low.sum(dim=1, keepdim=True, dtype=torch.int32)          # [rows, 1]
    low |= tie & (tie.cumsum(dim=1, dtype=torch.int32) <= need)
    return low


def keep_unstructured(score: torch.Tensor, sparsity: float, group: str = "row") -> torch.Tensor:
    """Prune the `sparsity` fraction with the lowest score (ties: lower index pruned first).

    group="row": per output row (Wanda's comparison group), int(cols*sparsity) pruned in each row.
    group="layer": over the whole matrix (magnitude pruning's comparison group).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if group == "row":
        return ~lowest_k(score, int(score.shape[1] * sparsity))
    if group == "layer":
        return ~lowest_k(score.reshape(1, -1), int(score.numel() * sparsity)).reshape(score.shape)
    raise ValueError(f"unknown comparison group {group!r}")


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
