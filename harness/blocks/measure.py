"""Sparsity measured on the stored weights (never on masks)."""

from __future__ import annotations

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.blocks.masks import nm_violations
from harness.offload import residency_of, session


def count_zeros(t: torch.Tensor) -> int:
    """Exact zeros of `t` without a full-size temporary wider than a byte: `(t == 0).sum()`
    widens the bool mask to int64 (8 bytes per entry: 4.2 GB for a 128k x 4096 head)."""
    return t.numel() - int(torch.count_nonzero(t))


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
                z = count_zeros(w)
                per_layer[f"{adapter.block_prefix(i)}.{name}"] = z / w.numel()
                zeros_blocks += z
                total_blocks += w.numel()
                if nm is not None:
                    bad, groups = nm_violations(w, n, m)
                    nm["violations"] += bad
                    nm["groups"] += groups
            if residency is not None:
                for p in block.parameters():
                    zeros_all += count_zeros(p)
                    total_all += p.numel()
    # outside the blocks: each distinct tensor read once (an offloaded unit is onloaded once);
    # the embedding's and head's own sparsity come from the same pass
    if residency is None:
        for p in model.parameters():  # parameters() yields a tied tensor once
            zeros_all += count_zeros(p)
            total_all += p.numel()
        emb_w, head_w = adapter.embedding(model).weight, adapter.head(model).weight
        emb_sparsity, head_sparsity = count_zeros(emb_w) / emb_w.numel(), count_zeros(head_w) / head_w.numel()
    else:
        fractions: dict[str, float] = {}   # name in the files -> zero fraction
        for name, p in residency.named_tensors(blocks=False):
            z = count_zeros(p)
            zeros_all += z
            total_all += p.numel()
            fractions[name] = z / p.numel()
        # a tied head resolves to the embedding's name
        emb_sparsity = fractions[_file_name(model, adapter.embedding(model), residency)]
        head_sparsity = fractions[_file_name(model, adapter.head(model), residency)]
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


def _file_name(model: nn.Module, module: nn.Module, residency) -> str:
    """The name of `module`'s weight in the offloaded files (a tied alias resolves to its canonical name)."""
    own = next(f"{n}.weight" for n, m in model.named_modules() if m is module)
    return residency.canonical_name(own)
