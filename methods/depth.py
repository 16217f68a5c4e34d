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
Protected blocks: Shortened LLaMA's criteria (taylor, ppl_drop, magnitude; the paper's "+"
heuristic, applied by its reference block_prune.py to every criterion unless --no_plus_heuristic)
never remove the first four blocks or the last two; `protected="auto"` applies that to those
metrics only, a list of block indices (negative = from the end) protects those for any metric,
[] protects none. Protection applies to whole-block removal.
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


SHORTGPT = "https://arxiv.org/abs/2403.03853"
_cos = ("Structured-Depth", "Cosine Similarity", "Layer Numbers", "Calibration")
# metric -> (the paper's link on the Awesome-LLMs-Pruning list, its tags there); "" = not on the list
PAPERS: dict[str, tuple[str, Tags]] = {
    "block_influence": (SHORTGPT, Tags(*_cos, "Efficient LoRA", "Update")),
    "angular": ("https://arxiv.org/abs/2403.17887", Tags(*_cos, "Efficient LoRA", "Update")),
    "streamline_cosine": ("https://arxiv.org/abs/2403.19135",
                          Tags("Structured-Depth", "Cosine Similarity", "Layer Numbers", "Small",
                               "Efficient Lightweight", "Frozen")),
    "reverse": ("https://openreview.net/forum?id=EjHtQlKEzV",
                Tags("Structured-Depth", "Multiple", "Layer Numbers", "Calibration/Small", "Efficient", "Update")),
    **{m: ("https://arxiv.org/abs/2402.02834",
           Tags("Structured-Depth", "Perplexity", "Sparsity", "Calibration/Samll-50K", "Efficient-LoRA", "Update"))
       for m in ("taylor", "ppl_drop")},
    **{m: ("https://arxiv.org/abs/2407.16286",
           Tags("Structured-Depth", "Multiple", "Layer Numbers", "Calibration", "Emulated Update+LoRA", "Update"))
       for m in ("rel_l1", "rel_l2", "shapley")},
    # baselines of Kim et al. / Lu et al., not a paper of the list
    "magnitude": ("", Tags("Structured-Depth", "Magnitude", "Layer Numbers", "Data free", "Without", "Frozen")),
    "random": ("", Tags("Structured-Depth", "Other", "Layer Numbers", "Data free", "Without", "Frozen")),
}
SUBLAYERS = ("https://openreview.net/forum?id=YLTWwEjkdx",
             Tags(*_cos, "Without", "Frozen", qualifier="attention / MLP sublayers"))


# metrics whose paper/reference protects blocks by default (Shortened LLaMA's "+" heuristic)
PLUS_HEURISTIC = (0, 1, 2, 3, -2, -1)
PROTECTED_BY_DEFAULT = {"taylor": PLUS_HEURISTIC, "ppl_drop": PLUS_HEURISTIC, "magnitude": PLUS_HEURISTIC}


def protected_blocks(spec, metric: str, n_blocks: int) -> list[int]:
    """Block indices never removed: "auto" (the metric's paper default) or explicit indices."""
    idx = PROTECTED_BY_DEFAULT.get(metric, ()) if spec == "auto" else spec
    return sorted({int(i) % n_blocks for i in idx if -n_blocks <= int(i) < n_blocks})


def mask_protected(scores, protected: list[int], k: int, span: bool):
    """Scores with protected units (or windows of k touching one) set to +inf."""
    scores = scores.clone()
    for start in range(len(scores)):
        units = range(start, start + k) if span else (start,)
        if any(u in protected for u in units):
            scores[start] = float("inf")
    return scores


@register
@dataclass
class Depth(StructuredMethod):
    metric: str = "block_influence"
    shapley_rounds: int = 2          # Monte-Carlo rounds for metric=shapley (each = n_units forwards)
    score_samples: int = 0           # use the first k calibration samples for scoring (0 = all)
    protected: object = "auto"       # "auto" | list of block indices never removed (see docstring)

    name: ClassVar[str] = "depth"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Men et al. 2024 arXiv:2403.03853 (ShortGPT) and the metrics' papers (docstring)"
    reference: ClassVar[str] = "https://github.com/sramshetty/ShortGPT"
    differences: ClassVar[str] = ("every metric scored one-shot on the run's calibration set (Shortened "
                                  "LLaMA's reference: 10 BookCorpus samples of 128 tokens); no healing or "
                                  "replacement layers here (recovery axis)")
    listed: ClassVar[str] = SHORTGPT
    tags: ClassVar[Tags] = PAPERS["block_influence"][1]

    def paper_entry(self, pattern: str | None = None) -> tuple[str, Tags]:
        """The paper of this metric (attention/MLP sublayers by block influence: He et al.)."""
        if pattern == "sublayers" and self.metric == "block_influence":
            return SUBLAYERS
        return PAPERS[self.metric]

    def papers(self) -> list[str]:
        """One paper per metric, plus the sublayer paper: all implemented by this code."""
        return [link for link in (*(u for u, _ in PAPERS.values()), SUBLAYERS[0]) if link]
    patterns: ClassVar[frozenset[str]] = frozenset({"blocks", "sublayers"})
    needs_width_surgery: ClassVar[bool] = False

    def __post_init__(self):
        if self.metric not in METRICS:
            raise METRICS.unknown(self.metric)

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return METRICS.get(self.metric).needs_calibration

    @property
    def streams_blocks(self) -> bool:  # type: ignore[override]
        """Every metric but taylor (gradients of all weights at once) onloads one block at a time."""
        return self.metric != "taylor"

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        n = len(ctx.adapter.blocks(model))
        unit, k = units_to_remove(n, ctx)
        if not 0 < k < n:
            raise TargetError(f"target removes {k} {unit} units of {n}; need 0 < k < {n}")
        if unit != "block" and ctx.adapter.parallel:
            raise TargetError(f"{ctx.adapter.family} runs attention and MLP in parallel on one input: "
                              f"sublayer units are not separable there; use target pattern blocks")
        kept = protected_blocks(self.protected, self.metric, n) if unit == "block" else []
        if k > n - len(kept):
            raise TargetError(f"target removes {k} blocks of {n} but {len(kept)} are protected "
                              f"({kept}); set method.params.protected=[] to allow it")

    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        n = len(ctx.adapter.blocks(model))
        unit, k = units_to_remove(n, ctx)
        fn, needs_data, span = METRICS.get(self.metric)
        ids = ctx.calibration.input_ids if (needs_data and ctx.calibration is not None) else None
        if needs_data and ids is None:
            raise ValueError(f"depth metric {self.metric} needs calibration data")
        if ids is not None and self.score_samples:
            ids = ids[: self.score_samples]
        probe = UnitProbe(model, ctx.adapter, unit, ids, ctx.batch_size, ctx.device, ctx.seed,
                          shapley_rounds=self.shapley_rounds)
        scores = fn(probe, k)
        keep = protected_blocks(self.protected, self.metric, n) if unit == "block" else []
        removed = select_units(mask_protected(scores, keep, k, span and unit == "block"), k,
                               span=span and unit == "block")
        if unit == "block":
            surgery.drop_blocks(model, ctx.adapter, removed)
        else:
            for i in removed:
                surgery.drop_sublayer(model, ctx.adapter, i, unit)
        return {"removed": {"unit": unit, "indices": removed, "count": len(removed), "of": n},
                "importance": {"metric": self.metric, "span": bool(span and unit == "block"),
                               "scores": [float(s) for s in scores], "protected": keep}}


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
