"""Global magnitude pruning: one |W| threshold over all decoder-block linears at once.

Paper: Jaiswal et al., "The Emergence of Essential Sparsity in Large Pre-trained Models: The
Weights that Matter" (NeurIPS 2023) - one-shot global magnitude pruning.
Reference: VITA-Group/essential_sparsity.
Differences: scope is the decoder-block linears only (embeddings and lm_head excluded, the
convention of this benchmark); exactly k weights pruned (stable sort). Unstructured only: a single
global threshold has no N:M form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import Method
from methods.registry import register
from methods.tags import Tags


@register
@dataclass
class MagnitudeGlobal(Method):
    name: ClassVar[str] = "magnitude_global"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Jaiswal et al. 2023, arXiv:2306.03805"
    listed: ClassVar[str] = "https://arxiv.org/abs/2306.03805"
    reference: ClassVar[str] = "https://github.com/VITA-Group/essential_sparsity"
    differences: ClassVar[str] = "block linears only; exact-k selection"
    tags: ClassVar[Tags] = Tags("Unstructured", "Magnitude", "Sparsity", "Small-tasks", "Extensive/Without",
                                "Update/Frozen", qualifier="global threshold")
    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured"})
    needs_calibration: ClassVar[bool] = False

    @torch.no_grad()
    def prune(self, model, ctx) -> dict:
        linears = [lin for block in ctx.adapter.blocks(model) for lin in ctx.adapter.linears(block).values()]
        magnitudes = torch.cat([lin.weight.detach().abs().flatten().float().cpu() for lin in linears])
        k = int(magnitudes.numel() * ctx.target.ratio)
        keep = torch.ones_like(magnitudes, dtype=torch.bool)
        if k:
            keep[torch.sort(magnitudes, stable=True).indices[:k]] = False
        offset = 0
        per_layer = []
        for lin in linears:
            n = lin.weight.numel()
            layer_keep = keep[offset:offset + n].view_as(lin.weight).to(lin.weight.device)
            lin.weight.mul_(layer_keep.to(lin.weight.dtype))
            per_layer.append(1 - float(layer_keep.float().mean()))
            offset += n
        return {"allocation": {"allocator": "global-threshold", "layer_ratios": per_layer}}
