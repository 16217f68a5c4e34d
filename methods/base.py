"""Method contracts.

Method              everything a registered method carries: name (== conf/method/<name>.yaml),
                    version, paper, reference implementation, differences from it, tags, the
                    target patterns it can produce, and `prune(model, ctx)`.
WeightPruner        score-and-mask methods on the shared block loop: declare the statistics
                    needed, implement `score` (or override `prune_linear` / `prune_block`).

Methods are dataclasses whose fields are their hyper-parameters; they read no Hydra config and
no environment.
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.context import PruneContext
from harness.card import Card
from harness.blocks.loop import BlockContext, block_loop
from harness.blocks.masks import apply_keep_mask, keep_for_target
from harness.offload import session
from harness.targets import Target, TargetError, pattern_mismatch


class Method(Card):
    """A registered pruning method: its card (harness.card: name, version, paper, reference,
    differences, tags) plus the target patterns it can produce and `prune(model, ctx)`."""

    patterns: ClassVar[frozenset[str]]
    needs_calibration: ClassVar[bool] = True
    # Works one block at a time (harness.offload sessions); otherwise disk offload first
    # materialises the whole model on the host (Residency.materialize) for this method.
    streams_blocks: ClassVar[bool] = False

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        """Cheap checks against the loaded model, before calibration (raise TargetError)."""
        mismatch = pattern_mismatch(self, ctx.target.pattern)
        if mismatch:
            raise TargetError(mismatch)

    def prune(self, model: nn.Module, ctx: PruneContext) -> dict:
        raise NotImplementedError

    # Gradual pruning: a method whose pruning happens while the model trains names the recoveries
    # that drive it (they call `training_hook`'s callback after every optimizer step); validation
    # refuses such a method with any other recovery. Empty: the method prunes at the prune stage.
    training_recoveries: ClassVar[tuple[str, ...]] = ()

    def training_hook(self, model: nn.Module, ctx, steps: int):
        """Callback `(step) -> None` called after optimizer step `step` (1-based) of `steps`, and
        `report() -> dict` on it; None for a method that does not prune during training."""
        return None


def check_nm_divisible(model: nn.Module, ctx: PruneContext) -> None:
    """An N:M target needs every block linear's input width to be a multiple of M."""
    if ctx.target.is_nm:
        for block in ctx.adapter.blocks(model)[:1]:
            for name, lin in ctx.adapter.linears(block).items():
                if lin.in_features % ctx.target.m:
                    raise TargetError(f"{name}: in_features={lin.in_features} is not a multiple "
                                      f"of M={ctx.target.m}")


class WeightPruner(Method):
    """Masks block linears from a per-weight score, block by block on the shared loop."""

    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured", "nm"})
    streams_blocks: ClassVar[bool] = True
    statistics: ClassVar[tuple[str, ...]] = ()   # names in harness.blocks.collectors.COLLECTORS
    comparison_group: ClassVar[str] = "row"      # "row" (per output) or "layer"
    share_statistics: ClassVar[bool] = True      # one statistic per input group (False: per linear)

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        check_nm_divisible(model, ctx)

    # -- the per-layer math ------------------------------------------------------------------------
    def score(self, weight: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Importance [out, in]; higher = keep."""
        raise NotImplementedError

    def prune_linear(self, name: str, linear: nn.Linear, stats: dict[str, torch.Tensor],
                     sparsity: float, target: Target) -> None:
        score = self.score(linear.weight.data.float(), stats)
        keep = keep_for_target(score, sparsity, target.n, target.m, self.comparison_group)
        apply_keep_mask(linear, keep)

    def prune_block(self, blk: BlockContext, target: Target) -> None:
        for name, linear in blk.linears.items():
            self.prune_linear(name, linear, blk.stats.get(name, {}), blk.sparsity, target)

    # -- lifecycle ---------------------------------------------------------------------------------
    def block_ratios(self, model: nn.Module, ctx: PruneContext) -> tuple[list[float], dict]:
        """One ratio per block, and the report entries the allocation adds (allocator's, then ours)."""
        if ctx.target.is_nm:  # N:M fixes every layer's ratio; allocation does not apply
            return [ctx.target.ratio] * len(ctx.adapter.blocks(model)), {}
        ratios, info = ctx.allocator.allocate(model, ctx)
        return ratios, {**info, "allocation": {"allocator": ctx.allocator.name, "block_ratios": ratios}}

    def prune(self, model: nn.Module, ctx: PruneContext) -> dict:
        target = ctx.target
        return self.prune_blocks(model, ctx, lambda blk: self.prune_block(blk, target))

    def prune_blocks(self, model: nn.Module, ctx: PruneContext, visit, first: dict | None = None) -> dict:
        """Run `visit(blk)` on every block (the shared loop) and return the report: `first` (entries a
        method puts before the rest), the allocation, then timing and reuse."""
        ratios, allocation = self.block_ratios(model, ctx)
        report = {**(first or {}), **allocation}
        target = ctx.target
        if not self.needs_calibration:
            t = time.perf_counter()
            for i, block in enumerate(ctx.adapter.blocks(model)):
                with session(model, block, modifies=True):   # one block onloaded at a time
                    for name, lin in ctx.adapter.linears(block).items():
                        self.prune_linear(name, lin, {}, ratios[i], target)
            report["timing"] = {"method_s": time.perf_counter() - t, "forward_s": 0.0}
            return report
        if ctx.calibration is None:
            raise ValueError(f"method {self.name} needs calibration data")
        timing = block_loop(model, ctx.adapter, ctx.calibration.input_ids, visit, ratios,
                            statistics=self.statistics, device=ctx.device, batch_size=ctx.batch_size,
                            propagation=ctx.propagation, share_statistics=self.share_statistics,
                            cache=ctx.block_cache(model), desc=f"prune {self.name}", devices=ctx.devices)
        report["timing"] = {"capture_s": timing.capture_s, "forward_s": timing.forward_s,
                            "collect_s": timing.collect_s, "method_s": timing.method_s,
                            "n_block_forwards": timing.n_forwards}
        if timing.unreached:   # experts the router sent no calibration token to (see harness.blocks.loop)
            report["linears_without_routed_tokens"] = timing.unreached
        report.setdefault("reused", {}).update(
            {"calibration_tokens": bool(getattr(ctx.calibration, "reused", False)), **timing.reused})
        return report
