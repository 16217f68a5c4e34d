"""BESA: learnable per-layer sparsity allocation inside each block, weights frozen.

Paper: Xu, Shao, et al., "BESA: Pruning Large Language Models with Blockwise Parameter-Efficient
Sparsity Allocation" (ICLR 2024), arXiv:2402.16880.
Reference: https://github.com/OpenGVLab/LLMPrune-BESA.
As the paper and the reference's default run (`--blocksize -1`: one sparsity per linear layer):
weights of each linear are ranked per output row by importance (Wanda's |W| * ||x||); each linear
learns one distribution beta over K candidate sparsities d_k (softmax of learnable logits), shared
by its rows (`allocation="row"`: one distribution per output row, a prunebench variant); the
differentiable mask keeps weight (r, j) with probability
P(d <= rank_j / cols) = sum_{k: d_k <= rank_j/cols} beta_k; the logits are trained with Adam to
minimise the block's reconstruction error (MSE of the masked block's outputs vs the dense
block's outputs, normalised by the dense outputs' mean square) + `penalty` * (expected block
sparsity - target)^2 (the reference: beta * ((s - t) / t)^2, see differences). The weights stay
frozen.
Final mask: the learned sparsity s = sum_k beta_k d_k of the linear (of the row with
allocation="row"); in the whole block exactly int(target * block weights) weights are pruned, those
with the lowest rank_j/cols - s, so each block meets its target exactly, every row of a linear
loses its share s (to one weight) and linears with larger learned s lose more.
Simplifications (stated honestly): only `steps` Adam steps per block (default 8, cycling over the
calibration micro-batches; the reference trains several epochs on GPU), so the allocation is
learned from a few samples on CPU; the soft mask is used in the forward pass (the reference uses
the hard mask in the forward with a straight-through gradient through the soft one, and
beta = softmax(sigmoid(logits)), its default sigmoid smoothing); the sparsity penalty is
`penalty` * (s - t)^2 on the absolute gap (the reference: beta * ((s - t) / t)^2, relative to the
target); Adam (the reference's default optimiser is Prodigy); candidates d_k = k/K, k = 0..K-1
with K=20 (the reference: steps of 0.01 from 0 to 1); logits initialised to a Gaussian bump around
the target (the reference: zeros, i.e. uniform beta); no joint weight quantisation. Unstructured
only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

from harness.blocks.loop import BlockContext
from harness.blocks.masks import wanda_score
from harness.targets import Target
from methods.base import WeightPruner
from methods.registry import register
from methods.tags import Tags


def rank_fraction(score: torch.Tensor) -> torch.Tensor:
    """Per row, the position of each weight in ascending score order divided by cols ([out, in])."""
    cols = score.shape[1]
    order = torch.argsort(score, dim=1, stable=True)
    frac = torch.empty_like(score)
    frac.scatter_(1, order, torch.arange(cols, dtype=score.dtype, device=score.device).expand_as(score) / cols)
    return frac


def soft_keep(logits: torch.Tensor, bucket: torch.Tensor) -> torch.Tensor:
    """Keep probability [out, in]: sum of beta over candidates d_k <= rank fraction.
    logits: [out, K]; bucket: [out, in] long = number of candidates <= the weight's rank fraction."""
    beta = torch.softmax(logits, dim=1)
    cum = torch.cat([torch.zeros_like(beta[:, :1]), beta.cumsum(dim=1)], dim=1)   # [out, K+1]
    return torch.gather(cum, 1, bucket)


@register
@dataclass
class BESA(WeightPruner):
    name: ClassVar[str] = "besa"
    version: ClassVar[str] = "2"   # 2: one learned sparsity per linear (the reference default), was per row
    paper: ClassVar[str] = "Xu et al. 2024 (ICLR), arXiv:2402.16880"
    listed: ClassVar[str] = "https://openreview.net/forum?id=gC6JTEU3jl"
    reference: ClassVar[str] = "https://github.com/OpenGVLab/LLMPrune-BESA"
    differences: ClassVar[str] = ("few CPU Adam steps per block (reference: one epoch of Prodigy on GPU); soft "
                                  "mask in the forward (reference: hard mask, straight-through, "
                                  "softmax(sigmoid(logits))); penalty p*(s-t)^2 (reference: beta*((s-t)/t)^2); "
                                  "20 candidate sparsities k/20 (reference: steps of 0.01) with logits "
                                  "initialised around the target (reference: zeros); exact block target by a "
                                  "global selection on rank - learned layer sparsity; no joint quantisation")
    tags: ClassVar[Tags] = Tags("Unstructured", "Wanda", "Sparsity-block", "Calibration",
                                "Without", "Frozen",
                                qualifier="learned per-layer allocation inside each block")
    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured"})
    statistics: ClassVar[tuple[str, ...]] = ("input_norm",)

    steps: int = 8               # Adam steps per block, cycling over the calibration micro-batches
    lr: float = 0.05
    candidates: int = 20
    penalty: float = 10.0
    init_width: float = 0.1      # std of the initial beta around the target
    allocation: str = "layer"    # layer: one learned sparsity per linear (reference); row: per output row

    def __post_init__(self):
        if self.steps < 0 or self.candidates < 2 or self.lr <= 0 or self.penalty < 0:
            raise ValueError("besa needs steps >= 0, candidates >= 2, lr > 0, penalty >= 0")
        if self.allocation not in ("layer", "row"):
            raise ValueError(f"besa allocation must be 'layer' or 'row', got {self.allocation!r}")

    def prune_block(self, blk: BlockContext, target: Target) -> dict:
        """Learn this block's sparsities and prune it; returns the block's log entry."""
        block, lins = blk.block, blk.linears
        cands = torch.arange(self.candidates, dtype=torch.float32) / self.candidates      # [K]
        frac, bucket, logits, weights = {}, {}, {}, {}
        total = sum(lin.weight.numel() for lin in lins.values())
        for name, lin in lins.items():
            w = lin.weight.detach().float()
            score = wanda_score(w, blk.stats[name]["input_norm"])
            frac[name] = rank_fraction(score)                                             # [out, in]
            c = cands.to(w.device)
            bucket[name] = torch.searchsorted(c, frac[name].contiguous(), right=True)      # [out, in]
            init = -(c - blk.sparsity) ** 2 / (2 * self.init_width ** 2)
            rows = w.shape[0] if self.allocation == "row" else 1
            logits[name] = init.expand(rows, -1).clone().requires_grad_(True)              # [rows, K]
            weights[name] = lin.weight.detach()
        opt = torch.optim.Adam(list(logits.values()), lr=self.lr)
        flags = {p: p.requires_grad for p in block.parameters()}
        for p in block.parameters():
            p.requires_grad_(False)                                   # weights frozen
        losses = []
        try:
            with torch.enable_grad():
                batches = list(zip(blk.inputs.hidden, blk.inputs.kwargs, blk.dense_outputs))
                for step in range(self.steps):
                    h, kw, dense = batches[step % len(batches)]
                    params = {f"{n}.weight": weights[n] * soft_keep(logits[n].expand(lins[n].out_features, -1),
                                                                    bucket[n]).to(weights[n].dtype)
                              for n in lins}
                    out = blk.adapter.block_output(functional_call(block, params, (h,), kw))
                    rec = (out.float() - dense.float()).pow(2).mean() / dense.float().pow(2).mean()
                    # [rows] learned sparsities, weighted by the weights each one covers
                    expected = sum((torch.softmax(logits[n], 1) @ cands.to(logits[n].device)).sum()
                                   * lins[n].weight.numel() / logits[n].shape[0] for n in lins) / total
                    loss = rec + self.penalty * (expected - blk.sparsity) ** 2
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(float(rec.detach()))
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
        with torch.no_grad():
            row_sparsity = {n: torch.softmax(logits[n], 1) @ cands.to(logits[n].device) for n in lins}   # [rows]
            pick = torch.cat([(frac[n] - row_sparsity[n].reshape(-1, 1)).flatten() for n in lins])
            k = int(total * blk.sparsity)
            prune = torch.zeros_like(pick, dtype=torch.bool)
            if k:
                prune[torch.sort(pick, stable=True).indices[:k]] = True
            offset, layer_ratio = 0, {}
            for n, lin in lins.items():
                size = lin.weight.numel()
                drop = prune[offset:offset + size].view_as(lin.weight)
                lin.weight.data.mul_((~drop).to(lin.weight.dtype))
                layer_ratio[n] = float(drop.float().mean())
                offset += size
        return {"block": blk.index, "layer_sparsity": layer_ratio,
                "learned_sparsity": {n: [float(v) for v in row_sparsity[n]] for n in lins},
                "rec_loss_first": losses[0] if losses else None,
                "rec_loss_last": losses[-1] if losses else None}

    def prune(self, model: nn.Module, ctx) -> dict:
        target = ctx.target
        log: list[dict] = []
        report = self.prune_blocks(model, ctx, lambda blk: log.append(self.prune_block(blk, target)))
        report["besa"] = {"blocks": log}
        return report
