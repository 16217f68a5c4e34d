"""Depth pruning: remove whole decoder blocks or attention / MLP sublayers by an importance metric.

Papers (one metric each, harness/blocks/importance.py):
  block_influence   Men et al., "ShortGPT: Layers in LLMs are More Redundant Than You Expect" (2024)
  angular           Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers" (2024)
  streamline_cosine Chen et al., "LLM-Streamline / Compressing LLMs by Streamlining the Unimportant Layer" (2024)
  reverse           Lu et al., "Reassessing Layer Pruning in LLMs: New Insights and Methods" (2024)
  taylor, ppl_drop  Kim et al., "Shortened LLaMA: Depth Pruning for LLMs" (2024)
  magnitude, random baselines of Kim et al. / Lu et al.
  rel_l1, rel_l2, shapley  Siddiqui et al., "A deeper look at depth pruning of LLMs" (2024)
Sublayer units: He et al., "What Matters in Transformers? Not All Attention is Needed" (2024).
Target `blocks` removes blocks; target `sublayers` removes `count` attention or MLP sublayers.
Reference: https://github.com/sramshetty/ShortGPT (BI), https://github.com/Nota-NetsPresso/shortened-llm
(Taylor+/PPL), https://github.com/CASE-Lab-UMD/LLM-Drop (attention/MLP drop).
Differences: one-shot scoring on the calibration set with dense propagation (ShortGPT's
protocol) for every metric; span metrics (angular, streamline_cosine) remove the best window of
n contiguous blocks as in Gromov et al. (on sublayers they score single units); LLM-Streamline's
replacement layer and Gromov's healing are recovery, not done here; Shapley values are a
truncated Monte-Carlo estimate (importance.shapley); ppl_drop/taylor/shapley use the calibration
set rather than a held-out set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from harness import surgery
from harness.blocks.context import PruneContext
from harness.blocks.importance import METRICS, UnitProbe, select_units
from harness.targets import TargetError
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags


def units_to_remove(n_blocks: int, ctx: PruneContext) -> tuple[str, int]:
    """(unit, k) from the target: a block ratio or count, or a sublayer count."""
    t = ctx.target
    if t.pattern == "sublayers":
        return t.sublayer, int(t.count)
    k = int(t.count) if t.count else int(math.floor(t.ratio * n_blocks + 0.5))
    return "block", k


@register
@dataclass
class Depth(StructuredMethod):
    metric: str = "block_influence"
    shapley_rounds: int = 2          # Monte-Carlo rounds for metric=shapley (each = n_units forwards)
    score_samples: int = 0           # use the first k calibration samples for scoring (0 = all)

    name: ClassVar[str] = "depth"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Men et al. 2024 arXiv:2403.03853 (ShortGPT) and the metrics' papers (docstring)"
    reference: ClassVar[str] = "https://github.com/sramshetty/ShortGPT"
    differences: ClassVar[str] = ("one-shot scores, dense propagation on the calibration set; span metrics "
                                  "remove the best contiguous window; no healing/replacement layers")
    tags: ClassVar[Tags] = Tags("Structured", "Similarity", "Blocks", "Calibration", "Without retraining",
                                "Frozen weights", qualifier="metric and unit are parameters")
    patterns: ClassVar[frozenset[str]] = frozenset({"blocks", "sublayers"})
    needs_width_surgery: ClassVar[bool] = False

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"unknown depth metric {self.metric!r}; one of {', '.join(sorted(METRICS))}")

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return METRICS[self.metric][1]

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        n = len(ctx.adapter.blocks(model))
        unit, k = units_to_remove(n, ctx)
        if not 0 < k < n:
            raise TargetError(f"target removes {k} {unit} units of {n}; need 0 < k < {n}")
        if unit != "block" and ctx.adapter.parallel:
            raise TargetError(f"{ctx.adapter.family} runs attention and MLP in parallel on one input: "
                              f"sublayer units are not separable there; use target pattern blocks")

    def surgery(self, model: nn.Module, ctx: PruneContext) -> None:
        n = len(ctx.adapter.blocks(model))
        unit, k = units_to_remove(n, ctx)
        fn, needs_data, span = METRICS[self.metric]
        ids = ctx.calibration.input_ids if (needs_data and ctx.calibration is not None) else None
        if needs_data and ids is None:
            raise ValueError(f"depth metric {self.metric} needs calibration data")
        if ids is not None and self.score_samples:
            ids = ids[: self.score_samples]
        probe = UnitProbe(model, ctx.adapter, unit, ids, ctx.batch_size, ctx.device, ctx.seed,
                          shapley_rounds=self.shapley_rounds)
        scores = fn(probe, k)
        removed = select_units(scores, k, span=span and unit == "block")
        if unit == "block":
            surgery.drop_blocks(model, ctx.adapter, removed)
        else:
            for i in removed:
                surgery.drop_sublayer(model, ctx.adapter, i, unit)
        ctx.report["removed"] = {"unit": unit, "indices": removed, "count": len(removed), "of": n}
        ctx.report["importance"] = {"metric": self.metric, "span": bool(span and unit == "block"),
                                    "scores": [float(s) for s in scores]}


@register
@dataclass
class ShortGPT(Depth):
    """ShortGPT: remove the blocks with the lowest Block Influence (1 - cos between a block's input
    and output hidden states). Same as `depth` with metric=block_influence, under its paper's name."""

    metric: str = "block_influence"

    name: ClassVar[str] = "shortgpt"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Men et al. 2024, ShortGPT, arXiv:2403.03853"
    reference: ClassVar[str] = "https://github.com/sramshetty/ShortGPT"
    differences: ClassVar[str] = "calibration = the run's calib preset (paper: PG19); one-shot BI, as the paper"
