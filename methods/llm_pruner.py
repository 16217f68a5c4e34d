"""LLM-Pruner: structural pruning of coupled groups by Taylor importance of the LM loss.

Paper: Ma, Fang, Wang, "LLM-Pruner: On the Structural Pruning of Large Language Models",
NeurIPS 2023, arXiv:2305.11627.
Reference: https://github.com/horseee/LLM-Pruner (hf_prune.py, LLMPruner/pruner/hf_llama_pruner.py).

Groups (coupled structures): an attention group = a KV head with its query heads: its q/k/v_proj
rows + o_proj columns (on MHA one head; `heads="query"` instead prunes query heads inside every KV
group, its q_proj rows + o_proj columns); an MLP channel = gate/up rows + down column;
a hidden channel = its column/row in every linear on the residual stream, every norm weight and
the (tied) embedding. Importance of a group = sum over its members of
  element-wise: sum_k |s_k|            vector-wise: |sum_k s_k| per row/column vector
  first order:  s = w * dL/dw          second order: s = w * dL/dw - 1/2 * w^2 * F (diag. Fisher)
mode=block prunes heads + MLP channels (the paper's block-wise setting), mode=channel prunes
hidden channels (channel-wise).

Differences: widths are uniform over all blocks (isomorphic model; the paper skips the first 4
and last 2 blocks, which would make widths non-uniform); one common shrink factor is solved for
the target fraction of all parameters (the paper applies one ratio to the prunable groups); the
loss gradient comes from the run's calibration set (paper: 10 Bookcorpus samples); GQA: query
heads are ranked within their KV group and every group keeps the same count; the second-order
term uses the mean squared per-micro-batch gradient as the Fisher diagonal; no LoRA recovery
here (the recovery axis is separate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness import surgery
from harness.adapters import FamilyAdapter
from harness.blocks.context import PruneContext
from harness.blocks.gradients import calibration_gradients
from harness.width import apply_width, plan_width
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags

MODE_AXES = {"block": ("heads", "mlp"), "channel": ("hidden",)}


def _reduce(s: torch.Tensor, dim: int, vector: bool) -> torch.Tensor:
    """Per-index importance along `dim` of the signed contribution s (1-D or 2-D)."""
    if s.dim() == 1:
        return s.abs()
    other = 1 - dim
    return s.sum(other).abs() if vector else s.abs().sum(other)


def taylor_group_scores(model: nn.Module, adapter, grads: dict, fisher: dict | None, vector: bool,
                        axes: tuple[str, ...]):
    """(heads [L, n_q] (q rows + o columns), mlp [L, F], hidden [D], kv [L, n_kv] (k + v rows))
    group importances; None for axes not requested."""
    names = {id(p): n for n, p in model.named_parameters()}

    def s(p: torch.Tensor) -> torch.Tensor:
        n = names[id(p)]
        w = p.detach().float()
        out = w * grads[n]
        if fisher is not None:
            out = out - 0.5 * w * w * fisher[n]
        return out

    def group_score(root: nn.Module, members) -> torch.Tensor:
        # the members of a coupled group are exactly what surgery removes (harness.surgery)
        return sum(_reduce(s(FamilyAdapter._get(root, m.path).weight), m.dim, vector) for m in members)

    n_q, n_kv, hd = surgery.head_layout(model.config)
    heads, mlps, kvs = [], [], []
    for blk in adapter.blocks(model):
        if "heads" in axes:
            heads.append(group_score(blk, surgery.block_group(adapter, "heads")).view(n_q, hd).sum(1).double())
            kvs.append(group_score(blk, surgery.block_group(adapter, "kv")).view(n_kv, hd).sum(1).double())
        if "mlp" in axes:
            mlps.append(group_score(blk, surgery.block_group(adapter, "mlp")).double())
    hidden = None
    if "hidden" in axes:   # summed member by member in float64 (a [V, D] embedding adds a column per channel)
        hidden = torch.zeros(model.config.hidden_size, dtype=torch.float64)
        for m in surgery.hidden_group(model, adapter):
            hidden += _reduce(s(FamilyAdapter._get(model, m.path).weight), m.dim, vector).double()
    return (torch.stack(heads) if heads else None, torch.stack(mlps) if mlps else None, hidden,
            torch.stack(kvs) if kvs else None)


@register
@dataclass
class LLMPruner(StructuredMethod):
    mode: str = "block"              # block: heads + MLP channels; channel: hidden channels
    importance: str = "element"      # element | vector
    order: str = "first"             # first | second (adds the diagonal-Fisher term)
    heads: str = "kv_group"          # kv_group (reference: whole KV groups) | query (heads inside groups)

    name: ClassVar[str] = "llm_pruner"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Ma et al. 2023, LLM-Pruner, NeurIPS, arXiv:2305.11627"
    listed: ClassVar[str] = "https://arxiv.org/abs/2305.11627"
    reference: ClassVar[str] = "https://github.com/horseee/LLM-Pruner"
    differences: ClassVar[str] = ("uniform widths over all blocks (isomorphic), budget = fraction of all "
                                  "parameters, calibration-set gradients, no LoRA")
    tags: ClassVar[Tags] = Tags("Structured", "Hessian", "Sparsity-layer", "Small-50K", "Efficient-LoRA",
                                "Update", qualifier="coupled groups, Taylor importance")
    patterns: ClassVar[frozenset[str]] = frozenset({"width"})

    def __post_init__(self):
        if self.mode not in MODE_AXES:
            raise ValueError(f"llm_pruner mode must be one of {sorted(MODE_AXES)}, got {self.mode!r}")
        if self.importance not in ("element", "vector"):
            raise ValueError(f"llm_pruner importance must be element or vector, got {self.importance!r}")
        if self.order not in ("first", "second"):
            raise ValueError(f"llm_pruner order must be first or second, got {self.order!r}")

    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        if ctx.calibration is None:
            raise ValueError("llm_pruner needs calibration data")
        axes = MODE_AXES[self.mode]
        plan = plan_width(model.config, ctx.target.ratio, axes, self.heads)
        grads, fisher = calibration_gradients(model, ctx.calibration.input_ids, ctx.batch_size, ctx.device,
                                              fisher=self.order == "second")
        heads, mlp, hidden, kv = taylor_group_scores(model, ctx.adapter, grads, fisher, self.importance == "vector",
                                                     axes)
        del grads, fisher
        removed = apply_width(model, ctx.adapter, plan, heads, mlp, hidden, kv)
        return {"width_plan": plan.describe() | {"axes": list(axes)}, "removed": removed}
