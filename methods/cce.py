"""Coupled components elimination (CCE), reconstructed from the paper's abstract.

Paper: Zhang, Shi, Sun, Sun, "Structured Pruning for Large Language Models Using Coupled Components
Elimination and Minor Fine-tuning", Findings of NAACL 2024, pages 1-12
(https://aclanthology.org/2024.findings-naacl.1). No reference implementation is public and only
the abstract is indexed, so this is a reconstruction (`fidelity = "reconstructed"`).

What the abstract states, and how it is built here:
- "importance of rows and columns in parameter matrices, based on intermediate data
  dependencies": the importance of a component is the energy it contributes, through its coupled
  consumer column, to the block output on the calibration data: an MLP channel j (gate/up row j,
  down column j) scores ||W_down[:, j]||^2 E[h_j^2] with h the down_proj input; a query head h
  (its q rows, o_proj columns) scores trace(W_o,h^T W_o,h E[z_h z_h^T]) with z_h its attention
  output (the o_proj input slice);
- "removes coupled components across different layers simultaneously": a channel's gate/up rows
  and down column go together, a head's q rows and o columns go together (harness.surgery);
- "preserves dependency relationships within remaining parameters": before removal the consumer's
  kept columns absorb the removed ones' contribution by least squares on the calibration
  intermediates: W_K' = W_K + W_R E[h_R h_K^T] (E[h_K h_K^T] + damp I)^-1 (`compensate`);
- "minor fine-tuning": the run's recovery axis (e.g. `recovery=lora`), not part of this method.

Not specified by the abstract (choices made here): the importance formula above; the least-squares
compensation and its damping; which components are coupled under GQA (query heads within their KV
group, every KV group kept, since k/v rows are shared by the group's query heads); uniform widths
across blocks (one common shrink factor for the parameter budget, harness.width) instead of any
per-layer allocation; the budget as a fraction of all parameters; one dense forward pass over the
run's calibration set for the statistics; the fine-tuning recipe (left to the recovery axis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness import surgery
from harness.blocks.context import PruneContext
from harness.width import _top, apply_width, plan_width
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags


@torch.no_grad()
def consumer_input_covariances(model: nn.Module, adapter, input_ids: torch.Tensor, batch_size: int,
                               device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per block E[z z^T] of the o_proj input [n_q*hd, n_q*hd] and E[h h^T] of the down_proj
    input [F, F] over all calibration tokens (float64)."""
    blocks = adapter.blocks(model)
    attn_cov = [None] * len(blocks)
    mlp_cov = [None] * len(blocks)
    count = [0]

    def acc(store, i):
        def hook(_m, args):
            x = args[0].reshape(-1, args[0].shape[-1]).double()           # [tokens, in]
            store[i] = x.t() @ x if store[i] is None else store[i] + x.t() @ x
        return hook

    handles = []
    for i, blk in enumerate(blocks):
        o = getattr(adapter.attention(blk), adapter.attn_output)
        down = getattr(adapter.mlp_module(blk), adapter.mlp_output)
        handles.append(o.register_forward_pre_hook(acc(attn_cov, i)))
        handles.append(down.register_forward_pre_hook(acc(mlp_cov, i)))
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start:start + batch_size].to(device)
            count[0] += ids.numel()
            model(ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    n = max(count[0], 1)
    return [c / n for c in attn_cov], [c / n for c in mlp_cov]


def channel_scores(w_down: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """[F]: ||W_down[:, j]||^2 E[h_j^2]."""
    return w_down.double().pow(2).sum(0) * cov.diagonal()


def head_scores(w_o: torch.Tensor, cov: torch.Tensor, n_q: int, hd: int) -> torch.Tensor:
    """[n_q]: trace(W_o,h^T W_o,h E[z_h z_h^T]) = E||W_o,h z_h||^2."""
    w = w_o.double().view(w_o.shape[0], n_q, hd)                          # [D, n_q, hd]
    blocks = cov.view(n_q, hd, n_q, hd).diagonal(dim1=0, dim2=2).permute(2, 0, 1)   # [n_q, hd, hd]
    gram = torch.einsum("dhi,dhj->hij", w, w)                              # [n_q, hd, hd]
    return (gram * blocks).sum((1, 2))


def compensate(w: torch.Tensor, cov: torch.Tensor, keep: torch.Tensor, damp: float) -> torch.Tensor:
    """Consumer weight [out, in] whose kept input columns absorb the removed ones by least squares:
    W_K + W_R C_RK C_KK^-1 (C = E[x x^T], C_KK damped by damp * mean diag); removed columns
    unchanged (they are cut next)."""
    w64 = w.double()
    removed = torch.ones(w.shape[1], dtype=torch.bool)
    removed[keep] = False
    if not removed.any():
        return w.clone()
    ckk = cov[keep][:, keep]
    ckk = ckk + torch.eye(len(keep), dtype=ckk.dtype) * damp * ckk.diagonal().mean()
    crk = cov[removed][:, keep]
    out = w64.clone()
    out[:, keep] += torch.linalg.solve(ckk, (w64[:, removed] @ crk).t()).t()
    return out.to(w.dtype)


@register
@dataclass
class CCE(StructuredMethod):
    compensate: bool = True         # kept consumer columns absorb the removed ones (least squares)
    damp: float = 0.01              # relative damping of the least-squares system

    name: ClassVar[str] = "cce"
    version: ClassVar[str] = "1"
    fidelity: ClassVar[str] = "reconstructed"
    paper: ClassVar[str] = ("Zhang, Shi, Sun, Sun 2024, Structured Pruning for LLMs Using Coupled Components "
                            "Elimination and Minor Fine-tuning, Findings of NAACL, pp. 1-12")
    reference: ClassVar[str] = ""   # none public
    differences: ClassVar[str] = (
        "reconstructed from the abstract; not specified by the abstract: the importance formula "
        "(output energy of each component through its consumer column), the least-squares "
        "compensation of the consumer and its damping, GQA coupling (query heads within KV groups), "
        "uniform widths across blocks, the budget as a fraction of all parameters, the calibration "
        "set, and the fine-tuning recipe (left to the recovery axis)")
    # not on the Awesome-LLMs-Pruning list: its values, as the abstract describes the method
    # (data-dependent importance, a parameter budget, minor fine-tuning, compensated weights)
    tags: ClassVar[Tags] = Tags("Structured", "Other", "Parameter", "Calibration", "Efficient", "Update",
                                qualifier="coupled rows/columns; reconstructed from the abstract")
    updates_weights: ClassVar[bool] = True   # least-squares compensation of the consumer (compensate=True)
    patterns: ClassVar[frozenset[str]] = frozenset({"width"})

    def __post_init__(self):
        if not 0 <= self.damp < 10:
            raise ValueError(f"cce damp must be in [0, 10), got {self.damp}")

    @torch.no_grad()
    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        if ctx.calibration is None:
            raise ValueError("cce needs calibration data")
        adapter = ctx.adapter
        # heads="query": query heads go within their KV group and every group stays (its stated GQA
        # coupling, which the least-squares compensation below covers); plan_width's default
        # removes whole KV groups, which this method neither scores nor compensates
        plan = plan_width(model.config, ctx.target.ratio, ("heads", "mlp"), heads="query")
        attn_cov, mlp_cov = consumer_input_covariances(model, adapter, ctx.calibration.input_ids,
                                                       ctx.batch_size, ctx.device)
        n_q, n_kv, hd = surgery.head_layout(model.config)
        group = n_q // n_kv
        heads, mlps = [], []
        for i, blk in enumerate(adapter.blocks(model)):
            o = getattr(adapter.attention(blk), adapter.attn_output)
            down = getattr(adapter.mlp_module(blk), adapter.mlp_output)
            hs = head_scores(o.weight, attn_cov[i], n_q, hd)
            ms = channel_scores(down.weight, mlp_cov[i])
            heads.append(hs)
            mlps.append(ms)
            if self.compensate:   # the same selection apply_width makes next
                if plan.intermediate < down.in_features:
                    keep = torch.tensor(_top(ms, plan.intermediate))
                    down.weight.copy_(compensate(down.weight, mlp_cov[i], keep, self.damp))
                if plan.q_per_group < group:
                    per = hs.view(n_kv, group)
                    keep_h = [j * group + h for j in range(n_kv) for h in _top(per[j], plan.q_per_group)]
                    keep = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in keep_h])
                    o.weight.copy_(compensate(o.weight, attn_cov[i], keep, self.damp))
        removed = apply_width(model, adapter, plan, torch.stack(heads), torch.stack(mlps), None)
        return {"width_plan": plan.describe() | {"axes": ["heads", "mlp"]}, "removed": removed,
                "fidelity": self.fidelity}
