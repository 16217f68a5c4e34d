"""Gradual magnitude pruning (GMP) while the model trains, as in the sparse scaling-law paper.

Paper: Frantar, Riquelme, Houlsby, Alistarh, Evci, "Scaling Laws for Sparsely-Connected Foundation
Models", ICLR 2024, arXiv:2309.08520. The schedule is Zhu & Gupta's (2017, arXiv:1710.01878):
    s(t) = s_f * (1 - (1 - p)^3),   p = clip((t - t_0) / (t_1 - t_0), 0, 1)
(initial sparsity 0, cubic; jaxpruner's step conventions: `cubic_sparsity`), recomputed every
`update_every` of training (a fraction: every max(1, round(update_every * steps)) optimizer steps),
the magnitude mask
re-applied after every step in between; after t_1 the model trains at the final sparsity s_f.
Values and where they come from (the paper links its pruning code, google-research/jaxpruner,
jaxpruner/projects/bigsparse):
  * start = 0.25, end = 0.75 of training: its t5x/configs/sparse_pretrain.gin prunes from step
    5,000 to 15,000 of 20,000 (update_start_step / update_end_step / TRAIN_STEPS). The paper's own
    text was not reachable here, so its statement of the window is not checked against this.
  * power 3: jaxpruner's PolynomialSchedule default (`target * (1 - (1 - progress) ** 3)`).
  * per-layer ("uniform") magnitude: the bigsparse magnitude config's `dist_type = 'uniform'`;
    every weight matrix of the blocks (attention and MLP projections) pruned to s_f by |W| over the
    whole matrix, exactly int(numel * s) weights (harness.blocks.masks.keep_unstructured, "layer").
  * embeddings and the LM head stay dense (sparse_pretrain.gin: embed_sparsity = None; the
    scaling law's N counts non-embedding parameters). The reference's magnitude sweep config
    (sparse_pretrain_mag.gin) instead prunes embeddings to 1 - sqrt(1 - s_f): listed in `differences`.
  * update_every = 0.005: the reference updates every 100 of 20,000 steps (update_freq = 100); as a
    fraction, so a run of a few hundred steps updates in the same proportion (every 1-3 steps).
Here the pruning runs inside `recovery=qat` (harness/recovery/qat.py: every parameter trains from the
random init of a `random_init` model); the prune stage itself changes no weight (the schedule starts
at sparsity 0) and reports the schedule. The sparsity reached is measured on the stored weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from harness.blocks.masks import keep_unstructured
from methods.base import Method
from methods.registry import register
from methods.tags import Tags


def cubic_sparsity(done: int, steps: int, final: float, start: float, end: float, every: int) -> float:
    """The scheduled sparsity after `done` optimizer steps (1-based) of `steps`, as jaxpruner's
    PolynomialSchedule sets it: with r = done - 1 the 0-based step, t_0 = start * steps and
    t_1 = end * steps, masks update at every r with r % every == 0 and t_0 <= r <= t_1, to
    s_f * (1 - (1 - p)^3) with p = clip(r + 1 - t_0, 0, t_1 - t_0) / (t_1 - t_0), and are held in
    between. One departure: r = t_1 is always an update, so s_f is reached when t_1 is no multiple
    of `every` (the reference's configs make it one: 15,000 and 100)."""
    t0, t1 = round(start * steps), round(end * steps)
    r = min(done - 1, t1)
    last = t1 if r == t1 else r - r % every     # the latest update step at or before r
    if last < t0:
        return 0.0
    p = 1.0 if t1 == t0 else min(last + 1 - t0, t1 - t0) / (t1 - t0)
    return float(final) * (1.0 - (1.0 - p) ** 3)


class GradualMagnitude:
    """The per-step callback: recompute the magnitude masks when the scheduled sparsity changes,
    re-apply them after every optimizer step (the optimizer moves pruned weights off zero)."""

    def __init__(self, linears: dict[str, torch.nn.Linear], final: float, steps: int, start: float,
                 end: float, every: int):
        self.linears, self.final, self.steps = linears, final, steps
        self.start, self.end, self.every = start, end, every
        self.masks: dict[str, torch.Tensor] = {}   # name -> bool [out, in] (True = keep)
        self.sparsity = 0.0
        self.updates: list[tuple[int, float]] = []  # (step, sparsity) of every mask recomputation

    @torch.no_grad()
    def __call__(self, step: int) -> None:
        s = cubic_sparsity(step, self.steps, self.final, self.start, self.end, self.every)
        if s != self.sparsity or (s > 0 and not self.masks):   # a new level, or resumed mid-schedule
            self.masks = {n: keep_unstructured(lin.weight.detach().abs().float(), s, "layer")
                          for n, lin in self.linears.items()}
            self.sparsity = s
            self.updates.append((step, round(s, 6)))
        for n, keep in self.masks.items():
            self.linears[n].weight.mul_(keep.to(self.linears[n].weight.dtype))

    def report(self) -> dict:
        return {"final_sparsity": self.final, "pruned_linears": len(self.linears), "updates": len(self.updates),
                "schedule": [list(u) for u in self.updates]}


@register
@dataclass
class GMP(Method):
    name: ClassVar[str] = "gmp"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Frantar et al. 2024 (ICLR), arXiv:2309.08520"
    listed: ClassVar[str] = "https://arxiv.org/abs/2309.08520"
    reference: ClassVar[str] = ("https://github.com/google-research/jaxpruner/tree/main/jaxpruner/projects/bigsparse "
                                "(t5x/configs/sparse_pretrain.gin, sparse_pretrain_mag.gin; sparsity-scaling.ipynb)")
    differences: ClassVar[str] = (
        "LLaMA-shaped decoder-only models of 0.1-0.8M block parameters with byte-level tokens trained on a C4 "
        "prefix for 10^5-10^6 tokens on one CPU thread (the paper: T5 encoder-decoders of 1.3M-85M non-embedding "
        "parameters on C4 for up to 10^6 steps of batch 128, and ViT on JFT-4B); AdamW with a cosine schedule "
        "(harness.recovery.train; the reference: Adafactor-style factored RMS with its own lr schedule); mask "
        "update every 0.5% of training, at least every step (the reference: every 100 of 20,000 steps); "
        "embeddings and LM head dense (the reference's magnitude sweep config prunes embeddings to 1-sqrt(1-s)); "
        "the law's L is the mean token loss on held-out C4 windows (recovery.heldout_*), not T5's validation set")
    tags: ClassVar[Tags] = Tags("Un/Semi-structured", "Trainable", "Sparsity", "Large-150B+", "Extensive", "Update",
                                qualifier="gradual magnitude pruning during training (cubic, 25%-75%)")
    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured"})
    needs_calibration: ClassVar[bool] = False
    updates_weights: ClassVar[bool] = True
    streams_blocks: ClassVar[bool] = True     # the prune stage touches no weight
    training_recoveries: ClassVar[tuple[str, ...]] = ("qat",)

    start: float = 0.25      # fraction of training where pruning starts (reference: 5,000 / 20,000 steps)
    end: float = 0.75        # fraction where it reaches the final sparsity (15,000 / 20,000)
    update_every: float = 0.005  # fraction of training between mask updates (reference: 100 / 20,000 steps)

    def __post_init__(self):
        self.start, self.end, self.update_every = float(self.start), float(self.end), float(self.update_every)
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"gmp: need 0 <= start < end <= 1, got start={self.start} end={self.end}")
        if not 0.0 < self.update_every <= self.end - self.start:
            raise ValueError(f"gmp: update_every must be in (0, end - start], got {self.update_every}")

    def prune(self, model, ctx) -> dict:
        # The schedule starts at sparsity 0: nothing to remove before training; recovery=qat prunes.
        return {"pruned_during": "training", "final_sparsity": ctx.target.ratio, "start": self.start,
                "end": self.end, "update_every": self.update_every, "power": 3, "distribution": "uniform per layer"}

    def training_hook(self, model, ctx, steps: int) -> GradualMagnitude:
        names = {id(p): n for n, p in model.named_parameters()}
        linears = {names[id(lin.weight)]: lin for block in ctx.adapter.blocks(model)
                   for lin in ctx.adapter.linears(block).values()}
        every = max(1, round(self.update_every * steps))    # optimizer steps between mask updates
        return GradualMagnitude(linears, float(ctx.prune.target.ratio), steps, self.start, self.end, every)
