"""RIA: Relative Importance and Activations, with channel permutation for N:M.

Paper: Zhang, Zhao, Lin, et al., "Plug-and-Play: An Efficient Post-training Pruning Method for
Large Language Models" (ICLR 2024).
Reference: https://github.com/biomedical-cybernetics/Relative-importance-and-activation-pruning
(main.py / lib/prune.py: prune_ria).
Score: RI_ij * ||X_j||^a with RI_ij = |W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik| (column sum plus
row sum), a = 0.5, compared over the whole layer (the reference's default; `per_outneuron=True`
compares within each output row, the reference's --per_outneuron) or in groups of M for N:M.

Channel permutation (N:M only, `permute=True`). Input channels are reordered so that the N:M groups
retain more score: channels are sorted by their summed score and dealt into the M-groups in a
"snake" order (RIA's heuristic channel reallocation), and the permutation is kept for a layer only
if it increases the retained score. To keep the model's function unchanged the permutation is
applied *physically*, only where that is a pure reordering: the inputs of `down_proj` together
with the output rows of `gate_proj` and `up_proj` (the MLP's intermediate channels). The stored
weights are then N:M in their stored order, which measure_sparsity verifies. Layers whose inputs
come from the residual stream (q/k/v, gate/up) or from the attention heads (o_proj) are not
permuted: that would require reordering the residual stream of every block or the head
dimensions of v_proj. The record lists the permuted layers and the retained-score gain.
Differences from the reference's default run (unstructured or plain N:M, no reallocation): the
layer-wise selection prunes exactly int(rows*cols*sparsity) weights with a stable sort (the
reference prunes every score <= the sorted value at that index, i.e. one weight more, plus ties).
With `permute=True` (the reference's --reallocation, off by default): the reference computes the
mask in permuted space and permutes the mask back (stored weights are then not N:M in their
order); here the permutation is applied physically and only to down_proj; no --lsa refinement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.loop import BlockContext
from harness.blocks.masks import apply_keep_mask, keep_for_target, keep_nm
from harness.targets import Target
from methods.base import WeightPruner
from methods.registry import register
from methods.tags import Tags


def ria_score(weight: torch.Tensor, input_norm: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """Relative importance [out, in] times the input-channel norm [in] to the power a."""
    w = weight.abs()
    ri = w / w.sum(dim=0, keepdim=True).clamp_min(1e-12) + w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return ri * input_norm.reshape(1, -1).pow(a)


def retained(score: torch.Tensor, n: int, m: int) -> float:
    """Total score kept by N:M selection of `score` [out, in] in its current column order."""
    return float((score * keep_nm(score, n, m)).sum())


def snake_permutation(score: torch.Tensor, m: int) -> torch.Tensor:
    """RIA's channel reallocation: sort input channels by summed score (descending) and deal them
    into the in/m groups in snake order, so each group of M gets a balanced mix of important and
    unimportant channels. Returns `perm` [in] with new column c = old column perm[c]."""
    cols = score.shape[1]
    groups = cols // m
    order = torch.argsort(score.sum(dim=0), descending=True, stable=True)   # [in]
    perm = torch.empty_like(order)
    for slot in range(m):                    # slot-th member of every group
        chunk = order[slot * groups:(slot + 1) * groups]
        perm[slot::m] = chunk if slot % 2 == 0 else chunk.flip(0)
    return perm


@register
@dataclass
class RIA(WeightPruner):
    name: ClassVar[str] = "ria"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Zhang et al. 2024 (ICLR), Plug-and-Play: RIA"
    listed: ClassVar[str] = "https://openreview.net/forum?id=Tr0lPx9woF"
    reference: ClassVar[str] = "https://github.com/biomedical-cybernetics/Relative-importance-and-activation-pruning"
    differences: ClassVar[str] = ("layer-wise selection prunes exactly int(rows*cols*s) weights (the "
                                  "reference's <= threshold prunes one more, plus ties); with permute=True "
                                  "(off by default) the permutation is physical, down_proj only, no LSA")
    tags: ClassVar[Tags] = Tags("Un/Semi-structured", "RIA", "Sparsity", "Calibration",
                                "Without", "Frozen",
                                qualifier="relative importance, N:M with channel permutation")
    statistics: ClassVar[tuple[str, ...]] = ("input_norm",)

    a: float = 0.5
    per_outneuron: bool = False      # the reference's --per_outneuron (Wanda's per-row comparison)
    permute: bool = False
    # which linear's inputs may be permuted -> the producer linears whose output rows move with them
    permutable: dict = field(default_factory=lambda: {"mlp.down_proj": ["mlp.gate_proj", "mlp.up_proj"]})

    @property
    def comparison_group(self) -> str:  # type: ignore[override]
        return "row" if self.per_outneuron else "layer"

    def score(self, weight: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        return ria_score(weight, stats["input_norm"], self.a)

    def prune_block(self, blk: BlockContext, target: Target, log: dict | None = None) -> None:
        """Prune one block; with permutation, the permuted layers and their gains go to `log`."""
        permuted = self.permute and target.is_nm
        for name, linear in blk.linears.items():
            if permuted and name in self.permutable:
                continue                                   # after its producers (they get reordered)
            self.prune_linear(name, linear, blk.stats.get(name, {}), blk.sparsity, target)
        if not permuted:
            return
        log = log if log is not None else {"layers": [], "retained_gain": []}
        for name, producers in self.permutable.items():
            if name not in blk.linears:
                continue
            linear = blk.linears[name]
            score = self.score(linear.weight.data.float(), blk.stats[name])   # [out, in]
            perm = snake_permutation(score, target.m)
            before, after = retained(score, target.n, target.m), retained(score[:, perm], target.n, target.m)
            if after > before:
                permute_channels(linear, [blk.linears[p] for p in producers], perm)
                score = score[:, perm]
                log["layers"].append(f"{blk.adapter.block_prefix(blk.index)}.{name}")
                log["retained_gain"].append(after / before - 1.0)
            apply_keep_mask(linear, keep_for_target(score, blk.sparsity, target.n, target.m))

    def prune(self, model: nn.Module, ctx) -> dict:
        target = ctx.target
        log = {"layers": [], "retained_gain": []}
        # permutation applies to N:M targets only, which have no allocation entry: it is the first key
        first = {"permutation": log} if self.permute and target.is_nm else {}
        return self.prune_blocks(model, ctx, lambda blk: self.prune_block(blk, target, log), first)


@torch.no_grad()
def permute_channels(consumer: nn.Linear, producers: list[nn.Linear], perm: torch.Tensor) -> None:
    """Reorder the consumer's input channels and the producers' output channels by `perm` [in];
    y = consumer(f(producers(x))) is unchanged for any elementwise f (SiLU(gate) * up)."""
    consumer.weight.data = consumer.weight.data[:, perm].contiguous()
    for p in producers:
        p.weight.data = p.weight.data[perm, :].contiguous()
        if p.bias is not None:
            p.bias.data = p.bias.data[perm].contiguous()
