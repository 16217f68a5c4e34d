"""Minitron width pruning: activation-based importance of heads, MLP neurons and embedding channels.

Paper: Muralidharan et al., "Compact Language Models via Pruning and Knowledge Distillation"
(Minitron), NeurIPS 2024, arXiv:2407.14679; Sreenivas et al., "LLM Pruning and Distillation in
Practice: The Minitron Approach", arXiv:2408.11796.
Reference: NVIDIA NeMo / Model-Optimizer (modelopt.torch.prune, "mcore_minitron").

One forward pass of the dense model over the calibration set with hooks:
  head i        ||attention output of head i||_2 (input of o_proj, per token)
  MLP neuron i  |activation i| (input of down_proj, per token)
  channel i     |normalised residual stream, channel i| summed over every RMSNorm output
Aggregation (paper's best, Sec. 4): mean over the sequence, then L2 over the batch.
Widths are uniform across blocks; axes default to mlp + hidden (the Llama-3.1-Minitron-4B width
recipe keeps attention heads), `axes=heads,mlp,hidden` also prunes query heads.
Depth variant: `depth` with metric=ppl_drop (LM loss with a block removed) or block_influence,
the two depth importances Minitron compares.

Differences: Nemotron's MLP uses squared ReLU (non-negative activations), SwiGLU activations are
signed, so |activation| is aggregated (identical on Nemotron); the pruned widths come from one
common shrink factor meeting the target fraction of all parameters instead of an architecture
search; no distillation here (recovery axis). Heads (when `axes` includes them) go by whole KV group,
a group scored by the sum of its query heads' importances (`heads="query"`: query heads inside
every group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness import surgery
from harness.blocks.context import PruneContext
from harness.width import apply_width, parse_axes, plan_width
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags


class _BatchL2SeqMean:
    """Accumulates sqrt(sum_b (mean_s a[b, s, :])^2) for a per-token score a [b, s, k]."""

    def __init__(self):
        self.sq: torch.Tensor | None = None

    def update(self, a: torch.Tensor) -> None:
        m = a.double().mean(1)                 # [b, k]
        sq = (m * m).sum(0)
        self.sq = sq if self.sq is None else self.sq + sq

    def result(self) -> torch.Tensor:
        return self.sq.sqrt()


@torch.no_grad()
def activation_scores(model: nn.Module, adapter, input_ids: torch.Tensor, batch_size: int, device: str):
    """(heads [L, n_q], mlp [L, F], hidden [D]) Minitron importances."""
    n_q, _, hd = surgery.head_layout(model.config)
    blocks = adapter.blocks(model)
    heads = [_BatchL2SeqMean() for _ in blocks]
    mlps = [_BatchL2SeqMean() for _ in blocks]
    hidden = _BatchL2SeqMean()
    norm_outs: list[torch.Tensor] = []
    handles = []
    for i, blk in enumerate(blocks):
        attn = adapter.attention(blk)
        o = getattr(attn, adapter.attn_output)
        down = getattr(adapter.mlp_module(blk), adapter.mlp_output)
        handles.append(o.register_forward_pre_hook(
            lambda _m, args, acc=heads[i]: acc.update(
                args[0].unflatten(-1, (n_q, hd)).float().norm(dim=-1))))       # [b, s, n_q]
        handles.append(down.register_forward_pre_hook(
            lambda _m, args, acc=mlps[i]: acc.update(args[0].float().abs())))   # [b, s, F]
        for path in filter(None, dict.fromkeys((adapter.attn_norm, adapter.mlp_norm))):
            handles.append(adapter._get(blk, path).register_forward_hook(
                lambda _m, _a, out: norm_outs.append(out.float().abs())))
    handles.append(adapter._get(model, adapter.final_norm).register_forward_hook(
        lambda _m, _a, out: norm_outs.append(out.float().abs())))
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start:start + batch_size].to(device)
            norm_outs.clear()
            model(ids, use_cache=False)
            hidden.update(torch.stack(norm_outs).sum(0))                         # [b, s, D]
    finally:
        for h in handles:
            h.remove()
    return (torch.stack([h.result() for h in heads]), torch.stack([m.result() for m in mlps]), hidden.result())


@register
@dataclass
class Minitron(StructuredMethod):
    axes: str = "mlp,hidden"         # subset of heads, mlp, hidden
    heads: str = "kv_group"          # kv_group | query (see harness.width)

    name: ClassVar[str] = "minitron"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Muralidharan et al. 2024, Minitron, arXiv:2407.14679"
    listed: ClassVar[str] = "https://arxiv.org/abs/2407.14679"
    reference: ClassVar[str] = "https://github.com/NVIDIA/TensorRT-Model-Optimizer (modelopt.torch.prune)"
    differences: ClassVar[str] = ("|activation| for signed SwiGLU outputs; widths from one shrink factor for "
                                  "the parameter budget (no architecture search); no distillation")
    tags: ClassVar[Tags] = Tags("Structured-Channel+Depth", "Activation/Perplexity", "Parameter",
                                "Calibration+Medium 1.8B", "Extensive", "Update", qualifier="heads / MLP neurons / embedding channels")
    patterns: ClassVar[frozenset[str]] = frozenset({"width"})

    def __post_init__(self):
        parse_axes(self.axes)

    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        if ctx.calibration is None:
            raise ValueError("minitron needs calibration data")
        axes = parse_axes(self.axes)
        plan = plan_width(model.config, ctx.target.ratio, axes, self.heads)
        heads, mlp, hidden = activation_scores(model, ctx.adapter, ctx.calibration.input_ids, ctx.batch_size,
                                               ctx.device)
        removed = apply_width(model, ctx.adapter, plan, heads, mlp, hidden)
        return {"width_plan": plan.describe() | {"axes": list(axes)}, "removed": removed}
