"""DSnoT: training-free prune-and-grow refinement of a base method's sparse mask.

Paper: Zhang, Zhao, Lin, et al., "Dynamic Sparse No Training: Training-Free Fine-tuning for Sparse
LLMs" (ICLR 2024), arXiv:2310.08915.
Reference: https://github.com/zyxxmu/DSnoT (lib/prune.py: prune_DSnoT; default run = the README
command: initial_method wanda, max_cycle_time 50, update_threshold 0.1, pow_of_var_regrowing 1,
and main.py's defaults skip_layer=mlp, without_same_sign=True).

Per output row i, with c_ij = W_ij * S_j, S_j = sum of x_j over all calibration tokens / number of
calibration sequences (the reference's scale, seq_len x E[x_j]), and the expected reconstruction
error e_i = sum over pruned j of c_ij (dense minus sparse output):
- the initial mask prunes, per row, the int(cols * sparsity) lowest base scores (stable sort);
- grow candidates: the pruned weights ordered by c_ij / Var(x_j) (`pow_of_var_regrowing`, Var = the
  per-sequence variance averaged over sequences); while e_i > 0 the next one is taken from the
  top of that order, otherwise from the bottom;
- prune candidates: the kept weights, those with c_ij < 0 in ascending Wanda score |W_ij| ||x_j||,
  then those with c_ij > 0 in descending Wanda score; while e_i < 0 the next one is taken from the
  end (the least important positive), otherwise from the start (the least important negative);
- one grow + one prune per row per cycle (row sparsity stays exact), at most `max_cycles` cycles;
  a row stops for good once |e_i| <= `update_threshold` before a swap.
Only the attention linears are refined (`skip="mlp"`, the reference's default); the MLP linears
keep the base mask.

Options that are not the reference's default (off by default): `same_sign_stop` (stop a row when
the swap would flip the sign of e_i, the reference's without_same_sign=False), `exact_acceptance`
(accept a swap only if it lowers the row's exact reconstruction error delta^T X^T X delta; a
prunebench addition), `pow_of_var_regrowing=0` (no variance scaling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.context import PruneContext
from harness.blocks.loop import BlockContext
from harness.blocks.masks import keep_unstructured, wanda_score
from harness.targets import Target, TargetError
from methods.base import WeightPruner
from methods.registry import build_method, register
from methods.tags import Tags

SKIPS = ("none", "mlp", "attn")


def _candidate_orders(contrib: torch.Tensor, keep: torch.Tensor, grow_metric: torch.Tensor,
                      importance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: grow order [out, in] (pruned weights by ascending grow metric, first n_pruned
    entries valid), prune order [out, in] (kept weights: c<0 by ascending importance, c=0, then
    c>0 by descending importance; first n_kept entries valid), n_pruned [out], n_kept [out]."""
    cols = contrib.shape[1]
    big = torch.finfo(torch.float64).max
    grow_key = torch.where(~keep, grow_metric.double(), torch.full_like(grow_metric, big, dtype=torch.float64))
    grow_order = torch.sort(grow_key, dim=1, stable=True).indices                 # pruned first
    by_importance = torch.sort(torch.where(keep, importance.double(), big), dim=1, stable=True).indices
    c_sorted = contrib.gather(1, by_importance)                                    # [out, in]
    kept_sorted = keep.gather(1, by_importance)
    pos = torch.arange(cols, device=contrib.device).expand_as(contrib).double()
    key = torch.where(c_sorted < 0, pos, torch.where(c_sorted > 0, 3 * cols - pos, cols + pos))
    key = torch.where(kept_sorted, key, 4 * cols + pos)                            # pruned last
    prune_order = by_importance.gather(1, torch.sort(key, dim=1, stable=True).indices)
    return grow_order, prune_order, (~keep).sum(1), keep.sum(1)


@torch.no_grad()
def dsnot_refine(weight: torch.Tensor, keep: torch.Tensor, importance: torch.Tensor,
                 input_sum: torch.Tensor, input_var: torch.Tensor | None = None, max_cycles: int = 50,
                 update_threshold: float = 0.1, pow_of_var: float = 1.0, same_sign_stop: bool = False,
                 gram: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Refine `keep` [out, in] (True = kept) of dense `weight` [out, in]; returns (keep, swaps).

    importance: Wanda score [out, in] ordering the prune candidates; input_sum: S [in] (token sum /
    sequences); input_var: Var(x) [in] (None or pow_of_var=0: no scaling of the grow metric);
    gram: X^T X [in, in] (any positive scale) turns on exact-error acceptance.
    """
    w = weight.float()
    keep = keep.clone()
    out = w.shape[0]
    rows = torch.arange(out, device=w.device)
    contrib = w * input_sum.reshape(1, -1)                                          # c_ij  [out, in]
    grow_metric = contrib
    if input_var is not None and pow_of_var:
        grow_metric = contrib / input_var.reshape(1, -1).pow(pow_of_var)
    grow_order, prune_order, n_pruned, n_kept = _candidate_orders(contrib, keep, grow_metric, importance)
    err = (contrib * ~keep).sum(dim=1)                                              # e_i   [out]
    sign0 = torch.sign(err)
    g_lo, g_hi = torch.zeros_like(n_pruned), n_pruned - 1                           # grow pointers
    p_lo, p_hi = torch.zeros_like(n_kept), n_kept - 1                               # prune pointers
    if gram is not None:
        delta = w * ~keep                                                           # dense - sparse
        g = delta @ gram                                                            # [out, in]
        diag = torch.diag(gram)
    active = torch.ones(out, dtype=torch.bool, device=w.device)
    swaps = 0
    for _ in range(max_cycles):
        active &= (err.abs() > update_threshold) & (g_lo <= g_hi) & (p_lo <= p_hi)
        if not bool(active.any()):
            break
        from_top = err > 0
        j = grow_order[rows, torch.where(from_top, g_hi, g_lo).clamp_min(0)]        # grow   [out]
        from_end = err < 0
        k = prune_order[rows, torch.where(from_end, p_hi, p_lo).clamp_min(0)]       # prune  [out]
        cj, ck = contrib[rows, j], contrib[rows, k]
        accept = active.clone()
        if same_sign_stop:
            accept &= torch.sign(err + ck - cj) == sign0
        if gram is not None:
            wj, wk = w[rows, j], w[rows, k]
            # exact change of delta^T G delta when delta_j: w_j -> 0 and delta_k: 0 -> w_k
            change = (-2 * wj * g[rows, j] + 2 * wk * g[rows, k] + wj ** 2 * diag[j] + wk ** 2 * diag[k]
                      - 2 * wj * wk * gram[j, k])
            accept &= change < 0
        active = accept                                      # a row that does not swap stops
        if not bool(accept.any()):
            break
        r = rows[accept]
        keep[r, j[accept]] = True
        keep[r, k[accept]] = False
        err[r] += ck[accept] - cj[accept]
        if gram is not None:
            g[r] += w[r, k[accept]].reshape(-1, 1) * gram[k[accept]] - w[r, j[accept]].reshape(-1, 1) * gram[j[accept]]
        g_hi = torch.where(accept & from_top, g_hi - 1, g_hi)
        g_lo = torch.where(accept & ~from_top, g_lo + 1, g_lo)
        p_hi = torch.where(accept & from_end, p_hi - 1, p_hi)
        p_lo = torch.where(accept & ~from_end, p_lo + 1, p_lo)
        swaps += int(accept.sum())
    return keep, swaps


@register
@dataclass
class DSnoT(WeightPruner):
    name: ClassVar[str] = "dsnot"
    version: ClassVar[str] = "2"
    paper: ClassVar[str] = "Zhang et al. 2024 (ICLR), arXiv:2310.08915"
    listed: ClassVar[str] = "https://arxiv.org/abs/2310.08915"
    reference: ClassVar[str] = "https://github.com/zyxxmu/DSnoT"
    differences: ClassVar[str] = (
        "unstructured only (the reference's N:M variant is not implemented); statistics accumulated as "
        "plain sums (the reference rescales running means; equal up to float rounding); a row whose "
        "candidate list is used up stops (the reference's pointers run on into the other list); kept "
        "weights with c_ij = 0 sit between the negative and positive prune candidates (the reference's "
        "reordering maps them to column 0)")
    tags: ClassVar[Tags] = Tags("Unstructured", "Magnitude/Hessian/Wanda", "Sparsity", "Calibration",
                                "Without", "Frozen",
                                qualifier="prune-and-grow refinement of a base mask")
    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured"})
    comparison_group: ClassVar[str] = "row"        # the reference's initial mask is per row

    base: str = "wanda"                  # the reference's initial_method
    base_params: dict = field(default_factory=dict)
    max_cycles: int = 50
    update_threshold: float = 0.1        # on the reference's scale (c = W * token sum / sequences)
    pow_of_var_regrowing: float = 1.0
    skip: str = "mlp"                    # sublayer left at the base mask: none | mlp | attn
    same_sign_stop: bool = False         # reference: without_same_sign=True (no sign stop)
    exact_acceptance: bool = False       # prunebench option: swaps must lower delta^T X^T X delta

    def __post_init__(self):
        self._base = build_method(self.base, self.base_params)
        if not isinstance(self._base, WeightPruner) or getattr(self._base, "updates_weights", False):
            raise ValueError(f"dsnot needs a mask-only WeightPruner as base, got {self.base!r}")
        if self.max_cycles < 0 or self.update_threshold < 0 or self.pow_of_var_regrowing < 0:
            raise ValueError("dsnot needs max_cycles, update_threshold and pow_of_var_regrowing >= 0")
        if self.skip not in SKIPS:
            raise ValueError(f"dsnot skip must be one of {SKIPS}, got {self.skip!r}")

    @property
    def statistics(self) -> tuple[str, ...]:
        extra = ["input_norm", "input_sum"]
        if self.pow_of_var_regrowing:
            extra.append("input_var")
        if self.exact_acceptance:
            extra.append("hessian")
        return tuple(dict.fromkeys((*self._base.statistics, *extra)))

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        self._base.check(model, ctx)
        if ctx.target.pattern != "unstructured":
            raise TargetError("dsnot supports unstructured targets only")

    def score(self, weight: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._base.score(weight, stats)

    def refine_linear(self, linear: nn.Linear, stats: dict[str, torch.Tensor], sparsity: float) -> int:
        """Refine the base mask of one linear; returns the number of swaps."""
        dense = linear.weight.data.float().clone()                 # [out, in]
        keep = keep_unstructured(self._base.score(dense, stats), sparsity, "row")
        importance = wanda_score(dense, stats["input_norm"])   # the Wanda score, as the reference
        keep, swaps = dsnot_refine(dense, keep, importance, stats["input_sum"], stats.get("input_var"),
                                   self.max_cycles, self.update_threshold, self.pow_of_var_regrowing,
                                   self.same_sign_stop, stats["hessian"] if self.exact_acceptance else None)
        linear.weight.data.copy_((dense * keep).to(linear.weight.dtype))
        return swaps

    def prune_block(self, blk: BlockContext, target: Target) -> int:
        """Prune one block; returns its number of swaps."""
        swaps = 0
        skipped = {"none": None, "mlp": blk.adapter.mlp, "attn": blk.adapter.attn}[self.skip]
        for name, linear in blk.linears.items():
            stats = blk.stats.get(name, {})
            in_skipped = skipped is not None and (name.startswith(skipped + ".") if skipped else
                                                  not name.startswith(blk.adapter.attn + "."))
            if in_skipped:   # the reference leaves these at the initial (base, per-row) mask
                score = self._base.score(linear.weight.data.float(), stats)
                linear.weight.data.mul_(keep_unstructured(score, blk.sparsity, "row").to(linear.weight.dtype))
            else:
                swaps += self.refine_linear(linear, stats, blk.sparsity)
        return swaps

    def prune(self, model: nn.Module, ctx) -> dict:
        target = ctx.target
        swaps: list[int] = []   # per block
        report = self.prune_blocks(model, ctx, lambda blk: swaps.append(self.prune_block(blk, target)))
        report["dsnot"] = {"base": self._base.describe(), "swaps": sum(swaps), "skip": self.skip}
        return report
