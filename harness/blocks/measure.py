"""Sparsity measured on the stored weights (never on masks)."""

from __future__ import annotations

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.blocks.masks import nm_violations
from harness.offload import residency_of, session


@torch.no_grad()
def measure_sparsity(model: nn.Module, adapter: FamilyAdapter, n: int | None = None,
                     m: int | None = None) -> dict:
    """One pass over the weights; an offloaded model has one unit onloaded at a time."""
    per_layer: dict[str, float] = {}
    zeros_blocks = total_blocks = 0
    zeros_all = total_all = 0
    nm = {"n": n, "m": m, "violations": 0, "groups": 0} if n is not None else None
    residency = residency_of(model)
    for i, block in enumerate(adapter.blocks(model)):
        with session(model, block):
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
            if residency is not None:
                for p in block.parameters():
                    zeros_all += int((p == 0).sum())
                    total_all += p.numel()
    if residency is None:
        for p in model.parameters():  # parameters() yields a tied tensor once
            zeros_all += int((p == 0).sum())
            total_all += p.numel()
    else:
        for name, p in residency.named_tensors(blocks=False):
            zeros_all += int((p == 0).sum())
            total_all += p.numel()
    # zero counts, not (w == 0).float(): a float copy of a 128k-vocab head is 2 GB
    with session(model, adapter.embedding(model)):
        emb = adapter.embedding(model).weight
        emb_sparsity = int((emb == 0).sum()) / emb.numel()
    with session(model, adapter.head(model)):
        head = adapter.head(model).weight
        head_sparsity = int((head == 0).sum()) / head.numel()
    return {
        "sparsity_blocks": zeros_blocks / max(total_blocks, 1),
        "sparsity_total": zeros_all / max(total_all, 1),
        "params_total": total_all,
        "params_block_linears": total_blocks,
        "embedding_sparsity": emb_sparsity,
        "lm_head_sparsity": head_sparsity,
        "per_layer": per_layer,
        "nm_check": nm,
    }
