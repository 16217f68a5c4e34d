"""Sparsity measured on the stored weights (never on masks)."""

from __future__ import annotations

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.blocks.masks import nm_violations


@torch.no_grad()
def measure_sparsity(model: nn.Module, adapter: FamilyAdapter, n: int | None = None,
                     m: int | None = None) -> dict:
    per_layer: dict[str, float] = {}
    zeros_blocks = total_blocks = 0
    nm = {"n": n, "m": m, "violations": 0, "groups": 0} if n is not None else None
    for i, block in enumerate(adapter.blocks(model)):
        for name, lin in adapter.linears(block).items():
            w = lin.weight
            z = int((w == 0).sum())
            per_layer[f"{adapter.block_prefix(i)}.{name}"] = z / w.numel()
            zeros_blocks += z
            total_blocks += w.numel()
            if nm is not None:
                bad, groups = nm_violations(w, n, m)
                nm["violations"] += bad
                nm["groups"] += groups
    zeros_all = total_all = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        zeros_all += int((p == 0).sum())
        total_all += p.numel()
    emb = adapter.embedding(model).weight
    head = adapter.head(model).weight
    return {
        "sparsity_blocks": zeros_blocks / max(total_blocks, 1),
        "sparsity_total": zeros_all / max(total_all, 1),
        "params_total": total_all,
        "params_block_linears": total_blocks,
        "embedding_sparsity": float((emb == 0).float().mean()),
        "lm_head_sparsity": float((head == 0).float().mean()),
        "per_layer": per_layer,
        "nm_check": nm,
    }
