"""DSnoT: training-free prune-and-grow refinement of a base method's sparse mask.

Paper: Zhang, Zhao, Lin, et al., "Dynamic Sparse No Training: Training-Free Fine-tuning for Sparse
LLMs" (ICLR 2024), arXiv:2310.08915.
Reference: https://github.com/zyxxmu/DSnoT (lib/prune.py: prune_DSnoT).
Per output row i, with c_ij = W_ij * E[x_j] (expected contribution of weight j) and the expected
reconstruction error e_i = sum over pruned j of c_ij (dense minus sparse output):
- grow the pruned weight whose c_ij has the sign of e_i and the largest |c_ij| (it pulls e_i
  toward zero);
- prune the kept weight with the smallest base importance |W_ij| * ||x_j|| among those whose c_ij
  has the opposite sign of e_i (removing it also pulls e_i toward zero); if none, the least
  important kept weight;
- one swap per row per cycle, so each row's (and layer's) sparsity stays exact; a row stops when
  |e_i| falls below `update_threshold`, when e_i changes sign, or after `max_cycles`.
Difference from the reference (stated, deliberate): a swap is *accepted* only if it lowers the
row's exact layer reconstruction error delta_i^T (X^T X) delta_i (delta_i = dense row minus sparse
row, X^T X from the calibration Hessian); a row whose proposed swap would not lower it stops. The
reference applies swaps on the expected-error criterion alone, which can raise the true error;
with the acceptance test DSnoT never worsens a layer over its base mask. The variance-scaled
pruning metric (`pow_of_var_pruning`) is not implemented. Unstructured only (the reference's N:M
variant is not implemented). The base must be a pure mask method (not one that updates weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.context import PruneContext
from harness.targets import Target, TargetError
from methods.base import WeightPruner
from methods.registry import build_method, register
from methods.tags import Tags


@torch.no_grad()
def dsnot_refine(weight: torch.Tensor, keep: torch.Tensor, importance: torch.Tensor,
                 input_mean: torch.Tensor, gram: torch.Tensor, max_cycles: int = 50,
                 update_threshold: float = 0.1) -> tuple[torch.Tensor, int]:
    """Refine `keep` [out, in] (True = kept) of dense `weight` [out, in]; returns (keep, swaps).

    importance: base score [out, in] (higher = keep); input_mean: E[x] [in];
    gram: X^T X (any positive scale) [in, in]. Row sparsity is unchanged by construction.
    """
    w = weight.float()
    keep = keep.clone()
    rows = torch.arange(w.shape[0], device=w.device)
    contrib = w * input_mean.reshape(1, -1)                    # c_ij  [out, in]
    delta = w * (~keep)                                        # dense - sparse  [out, in]
    err = (delta * input_mean.reshape(1, -1)).sum(dim=1)      # e_i   [out]
    g = delta @ gram                                           # (X^T X) delta_i per row [out, in]
    diag = torch.diag(gram)                                    # [in]
    sign0 = torch.sign(err)
    active = (err.abs() > update_threshold) & (sign0 != 0)
    swaps = 0
    nonzero = w != 0
    for _ in range(max_cycles):
        if not bool(active.any()):
            break
        s = torch.sign(err).reshape(-1, 1)
        grow_score = torch.where(~keep & nonzero, contrib * s, torch.full_like(w, -float("inf")))
        j = grow_score.argmax(dim=1)                                            # [out]
        can_grow = grow_score[rows, j] > 0
        kept = keep & nonzero
        kept_j = kept.clone()
        kept_j[rows, j] = False
        opposite = kept_j & (contrib * s < 0)
        inf = torch.full_like(w, float("inf"))
        k_opp = torch.where(opposite, importance, inf).argmin(dim=1)
        k_any = torch.where(kept_j, importance, inf).argmin(dim=1)
        k = torch.where(opposite.any(dim=1), k_opp, k_any)
        can_prune = kept_j.any(dim=1)
        wj, wk = w[rows, j], w[rows, k]
        # exact change of delta^T G delta when delta_j: w_j -> 0 and delta_k: 0 -> w_k
        change = (-2 * wj * g[rows, j] + 2 * wk * g[rows, k] + wj ** 2 * diag[j] + wk ** 2 * diag[k]
                  - 2 * wj * wk * gram[j, k])
        accept = active & can_grow & can_prune & (change < 0)
        if not bool(accept.any()):
            break
        r = rows[accept]
        keep[r, j[accept]] = True
        keep[r, k[accept]] = False
        g[r] += wk[accept].reshape(-1, 1) * gram[k[accept]] - wj[accept].reshape(-1, 1) * gram[j[accept]]
        err[r] += contrib[r, k[accept]] - contrib[r, j[accept]]
        swaps += int(accept.sum())
        active = accept & (err.abs() > update_threshold) & (torch.sign(err) == sign0)
    return keep, swaps


@register
@dataclass
class DSnoT(WeightPruner):
    name: ClassVar[str] = "dsnot"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Zhang et al. 2024 (ICLR), arXiv:2310.08915"
    listed: ClassVar[str] = "https://arxiv.org/abs/2310.08915"
    reference: ClassVar[str] = "https://github.com/zyxxmu/DSnoT"
    differences: ClassVar[str] = ("swaps accepted only if they lower the exact layer reconstruction "
                                  "error; no variance-scaled metric; unstructured only")
    tags: ClassVar[Tags] = Tags("Unstructured", "Magnitude/Hessian/Wanda", "Sparsity", "Calibration",
                                "Without", "Frozen",
                                qualifier="prune-and-grow refinement of a base mask")
    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured"})

    base: str = "wanda"
    base_params: dict = field(default_factory=dict)
    max_cycles: int = 50
    update_threshold: float = 0.1

    def __post_init__(self):
        self._base = build_method(self.base, self.base_params)
        if not isinstance(self._base, WeightPruner) or getattr(self._base, "updates_weights", False):
            raise ValueError(f"dsnot needs a mask-only WeightPruner as base, got {self.base!r}")
        if self.max_cycles < 0 or self.update_threshold < 0:
            raise ValueError("dsnot needs max_cycles >= 0 and update_threshold >= 0")
        self._swaps = 0

    @property
    def statistics(self) -> tuple[str, ...]:
        extra = ("input_norm", "input_mean", "hessian")
        return tuple(dict.fromkeys((*self._base.statistics, *extra)))

    @property
    def comparison_group(self) -> str:
        return self._base.comparison_group

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        self._base.check(model, ctx)
        if ctx.target.pattern != "unstructured":
            raise TargetError("dsnot supports unstructured targets only")

    def score(self, weight: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._base.score(weight, stats)

    def prune_linear(self, name: str, linear: nn.Linear, stats: dict[str, torch.Tensor],
                     sparsity: float, target: Target) -> None:
        dense = linear.weight.data.float().clone()                 # [out, in]
        self._base.prune_linear(name, linear, stats, sparsity, target)
        keep = linear.weight.data != 0
        # dense zeros: keep them "kept" so the refinement never counts them as pruned weights
        keep |= dense == 0
        importance = dense.abs() * stats["input_norm"].reshape(1, -1)
        keep, swaps = dsnot_refine(dense, keep, importance, stats["input_mean"], stats["hessian"],
                                   self.max_cycles, self.update_threshold)
        self._swaps += swaps
        linear.weight.data.copy_((dense * keep).to(linear.weight.dtype))

    def prune(self, model: nn.Module, ctx: PruneContext) -> dict:
        self._swaps = 0
        report = super().prune(model, ctx)
        report["dsnot"] = {"base": self._base.describe(), "swaps": self._swaps}
        return report
