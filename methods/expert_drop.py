"""Expert pruning for mixture-of-experts models: remove whole routed experts with the lowest
router-based importance, the same number in every MoE layer.

Importance of expert e in a layer = sum over calibration tokens routed to e of the gate weight the
router gave it = routing frequency x mean gate weight (a soft count of how much of the layer's
output the expert carries). Paper: Muzio, Sun, He, "SEER-MoE: Sparse Expert Efficiency through
Regularization for Mixture-of-Experts", arXiv:2404.05089 (heavy-hitters counting; its soft-count
variant accumulates router weights). Reconstructed from the paper's description: no reference
code is public, so this is not checked against a reference run.

Target pattern `experts`: ratio = fraction of routed experts removed per MoE layer (rounded to a
whole expert). The router loses the removed experts' rows, top-k is capped at the experts left,
the config's expert count follows, so the pruned model reloads with plain from_pretrained.
Shared experts and the router itself are never pruned. Statistics use dense propagation: every
layer is scored on the dense model's hidden states, in one calibration pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.capture import capture_block_inputs, run_block
from harness.blocks.context import PruneContext
from harness.experts import prune_experts, routed_experts, router_of
from harness.targets import TargetError
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags


@torch.no_grad()
def expert_importance(model: nn.Module, adapter, input_ids: torch.Tensor, batch_size: int,
                      device: str) -> dict[int, dict[str, torch.Tensor]]:
    """Per MoE block index: {"tokens": [E] routed-token counts, "gate_sum": [E] summed gate
    weights} over the calibration set (dense hidden states, block by block)."""
    inputs = capture_block_inputs(model, adapter, input_ids, batch_size, device)
    out: dict[int, dict[str, torch.Tensor]] = {}
    for i, block in enumerate(adapter.blocks(model)):
        found = routed_experts(block)
        handle = None
        if found is not None:
            path, experts = found
            n = experts.num_experts
            acc = {"tokens": torch.zeros(n, dtype=torch.float64), "gate_sum": torch.zeros(n, dtype=torch.float64)}
            out[i] = acc

            def hook(_mod, args, _out, acc=acc, n=n):
                _hidden, top_k_index, top_k_weights = args[:3]        # [T, k], [T, k]
                idx = top_k_index.reshape(-1).cpu()
                acc["tokens"] += torch.bincount(idx, minlength=n).double()
                acc["gate_sum"] += torch.zeros(n, dtype=torch.float64).index_add_(
                    0, idx, top_k_weights.reshape(-1).double().cpu())

            handle = experts.register_forward_hook(hook)
        try:
            outputs = run_block(block, adapter, inputs)
        finally:
            if handle is not None:
                handle.remove()
        inputs = inputs.advance(outputs)
    return out


@register
@dataclass
class ExpertDrop(StructuredMethod):
    name: ClassVar[str] = "expert_drop"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Muzio, Sun, He 2024, SEER-MoE, arXiv:2404.05089 (soft-count heavy hitters)"
    reference: ClassVar[str] = "https://arxiv.org/abs/2404.05089 (paper only: no public reference code)"
    differences: ClassVar[str] = ("reconstructed from the paper's description (no public reference code); "
                                  "importance = routing frequency x mean gate weight on the calibration set; "
                                  "the same number of experts removed in every MoE layer; no fine-tuning")
    # not on the Awesome-LLMs-Pruning list: tags in its vocabulary, chosen here (the router soft count
    # is no criterion the list names: "Other"; the same share of experts in every layer)
    tags: ClassVar[Tags] = Tags("Structured", "Other", "Sparsity-layer", "Calibration", "Without", "Frozen",
                                qualifier="whole routed experts, router soft count")
    patterns: ClassVar[frozenset[str]] = frozenset({"experts"})
    needs_width_surgery: ClassVar[bool] = False

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        counts = {routed_experts(b)[1].num_experts for b in ctx.adapter.blocks(model) if routed_experts(b)}
        if not counts:
            raise TargetError(f"method {self.name} needs a mixture-of-experts model; family "
                              f"{ctx.adapter.family!r} has no routed experts")
        n = min(counts)
        k = self.n_remove(n, ctx.target.ratio)
        top_k = int(getattr(model.config, "num_experts_per_tok", 1) or 1)
        if not 0 < k < n:
            raise TargetError(f"experts target ratio {ctx.target.ratio} removes {k} of {n} experts; need 0 < k < {n}")
        if n - k < top_k:
            raise TargetError(f"removing {k} of {n} experts leaves fewer than top-k={top_k} per token")

    @staticmethod
    def n_remove(n_experts: int, ratio: float) -> int:
        return int(math.floor(ratio * n_experts + 0.5))

    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        if ctx.calibration is None:
            raise ValueError("expert_drop needs calibration data")
        adapter = ctx.adapter
        stats = expert_importance(model, adapter, ctx.calibration.input_ids, ctx.batch_size, ctx.device)
        keep: list[list[int]] = []
        report = {}
        for i, block in enumerate(adapter.blocks(model)):
            if i not in stats:
                keep.append([])
                continue
            score = stats[i]["gate_sum"]          # = tokens x mean gate weight
            n = score.numel()
            k = self.n_remove(n, ctx.target.ratio)
            order = sorted(range(n), key=lambda e: (float(score[e]), e))   # lowest first, ties -> lower index
            removed = sorted(order[:k])
            keep.append([e for e in range(n) if e not in removed])
            report[adapter.block_prefix(i)] = {
                "removed": removed, "tokens": [int(t) for t in stats[i]["tokens"]],
                "importance": [float(s) for s in score],
                "experts_without_tokens": [e for e in range(n) if stats[i]["tokens"][e] == 0]}
        prune_experts(model, adapter, keep)
        return {"experts": report}
