"""Sparsity allocators: how a target ratio is spread over decoder blocks.

An allocator returns `(ratios, info)`: one ratio per block whose mean equals the target, and the
entries it adds to the method's report (`{}` if none). It is its own config axis (conf/allocator/),
usable with any score method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.context import PruneContext
from harness.blocks.masks import wanda_score
from harness.registry import Registry


@dataclass
class Uniform:
    name: ClassVar[str] = "uniform"
    needs_calibration: ClassVar[bool] = False

    def allocate(self, model: nn.Module, ctx: PruneContext) -> tuple[list[float], dict]:
        return [ctx.target.ratio] * len(ctx.adapter.blocks(model)), {}


@dataclass
class OWL:
    """Outlier Weighed Layerwise sparsity (Yin et al., ICML 2024, arXiv:2310.05175;
    reference https://github.com/luuyin/OWL, `prune_wanda_outlier`).

    Per block: D = share of Wanda scores |W_ij| * ||X_j|| (all linears of the block pooled) above
    `m` times their mean. D is min-max scaled to [0, 2*lam]; block density = D - mean(D) + (1 -
    target), so blocks with more outliers are pruned less and the mean ratio equals the target.
    Statistics come from one dense-propagation pass (as the reference, which scores the unpruned
    model), so they are reusable from the block cache across a sweep.
    Difference from the reference (no bound; a block ratio above 1 is meaningless there): ratios
    are kept in [0, MAX_RATIO] and what the bound cuts is spread evenly over the blocks still inside
    it, so the mean stays exactly the target (only reachable targets: a target above MAX_RATIO is
    a one-line error). Inactive at the paper's settings (lam = 0.08, target <= 0.8).
    """

    name: ClassVar[str] = "owl"
    listed: ClassVar[str] = "https://arxiv.org/abs/2310.05175"   # the paper on the Awesome-LLMs-Pruning list
    needs_calibration: ClassVar[bool] = True

    m: float = 5.0        # outlier threshold: M times the block's mean score (paper: 5 for LLaMA)
    lam: float = 0.08     # spread of block ratios around the target (paper: 0.08)

    def __post_init__(self):
        if self.m <= 0 or not 0 <= self.lam < 0.5:
            raise ValueError(f"owl needs m > 0 and lam in [0, 0.5), got m={self.m}, lam={self.lam}")

    def outlier_ratios(self, model: nn.Module, ctx: PruneContext) -> tuple[list[float], dict]:
        from harness.blocks.loop import block_loop

        ratios: list[float] = []

        def visit(blk) -> None:
            scores = [wanda_score(lin.weight.detach().float(), blk.stats[name]["input_norm"]).flatten()
                      for name, lin in blk.linears.items()]
            pooled = torch.cat(scores)                       # every Wanda score of the block
            # exact count / size (a float32 mean of the booleans rounds at ~1e-7)
            ratios.append(int((pooled > self.m * pooled.mean()).sum()) / pooled.numel())

        n = len(ctx.adapter.blocks(model))
        timing = block_loop(model, ctx.adapter, ctx.calibration.input_ids, visit, [0.0] * n,
                            statistics=("input_norm",), device=ctx.device, batch_size=ctx.batch_size,
                            propagation="dense", cache=ctx.block_cache(model), modifies=False,
                            desc="allocate owl", devices=ctx.devices)
        return ratios, {"forward_s": timing.forward_s, "capture_s": timing.capture_s,
                        "reused": timing.reused}

    def spread(self, outliers: list[float], target: float) -> list[float]:
        if not 0.0 <= target <= MAX_RATIO:
            raise ValueError(f"owl: target {target} outside [0, {MAX_RATIO}] (a block ratio cannot reach 1)")
        d = torch.tensor(outliers, dtype=torch.float64)
        span = float(d.max() - d.min())
        scaled = (d - d.min()) / span * (2 * self.lam) if span > 0 else torch.zeros_like(d)
        density = scaled - scaled.mean() + (1.0 - target)
        return [float(r) for r in keep_mean_within(1.0 - density, 0.0, MAX_RATIO)]

    def allocate(self, model: nn.Module, ctx: PruneContext) -> tuple[list[float], dict]:
        if ctx.calibration is None:
            raise ValueError("allocator owl needs calibration data")
        outliers, info = self.outlier_ratios(model, ctx)
        ratios = self.spread(outliers, ctx.target.ratio)
        return ratios, {"owl": {"outlier_ratios": outliers, "m": self.m, "lam": self.lam, **info}}


MAX_RATIO = 0.99


def keep_mean_within(ratios: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp `ratios` to [lo, hi] and spread what the clamp moved evenly over the entries still
    strictly inside, repeating until none leaves the bounds: the mean is unchanged (if reachable)."""
    r = ratios.clone()
    goal = float(r.sum())
    for _ in range(len(r) + 1):
        r = r.clamp(lo, hi)
        free = (r > lo) & (r < hi)
        gap = goal - float(r.sum())
        if abs(gap) < 1e-12 or not bool(free.any()):
            break
        r[free] += gap / int(free.sum())
    return r


# name (== conf/allocator/<name>.yaml) -> allocator class
ALLOCATORS: Registry = Registry("allocator", {"uniform": Uniform, "owl": OWL})


def build_allocator(name: str, params: dict | None = None):
    return ALLOCATORS.build(name, params)
