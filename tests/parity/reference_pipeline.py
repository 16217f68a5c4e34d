"""An independent, minimal version of the sequential pipeline the reference repositories run
(locuslab/wanda, IST-DASLab/sparsegpt, zyxxmu/DSnoT, RIA): catch what block 0 receives, then for
every block feed each calibration sequence on its own (batch 1) with hooks on every linear that
update the statistics the way the references' `add_batch` does (running rescale per sequence),
prune each linear of the block from those statistics, re-run the pruned block to get the next
block's inputs. Written from the papers' description of the pipeline; shares nothing with
harness/blocks (only the model and the per-linear rule supplied by the test).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class RunningStats:
    """Per-linear statistics updated one sequence at a time, on the references' scales.
    scaler_row = sum_t x_t^2 / n_seq (Wanda), sum_row = sum_t x_t / n_seq (DSnoT), var = pooled
    per-sequence population variance (DSnoT), H = 2/n_seq sum_t x_t x_t^T (SparseGPT)."""

    def __init__(self, cols: int):
        self.n = 0
        self.ntok = 0
        self.scaler_row = torch.zeros(cols)
        self.sum_row = torch.zeros(cols)
        self.var = torch.zeros(cols)
        self.H = torch.zeros(cols, cols)

    def add(self, x: torch.Tensor) -> None:          # x: [1, seq, cols] (one sequence)
        x = x.reshape(-1, x.shape[-1]).float()       # [tokens, cols]
        t = x.shape[0]
        v = x.var(dim=0, unbiased=False)
        self.var = v if self.ntok == 0 else (self.var * self.ntok + v * t) / (self.ntok + t)
        self.ntok += t
        scale = self.n / (self.n + 1)
        self.scaler_row *= scale
        self.sum_row *= scale
        self.H *= scale
        self.n += 1
        self.scaler_row += torch.norm(x.t(), p=2, dim=1) ** 2 / self.n   # wanda's add_batch expression
        self.sum_row += x.sum(0) / self.n
        xs = (2 / self.n) ** 0.5 * x
        self.H += xs.t() @ xs


def linears_of(block: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def run_reference(model: nn.Module, input_ids: torch.Tensor,
                  prune_linear: Callable[[int, str, nn.Linear, RunningStats], None]) -> None:
    """Prune `model` in place, block by block; prune_linear(block_index, name, linear, stats)."""
    layers = model.model.layers
    caught: list[tuple[torch.Tensor, dict]] = []

    class Caught(Exception):
        pass

    def catch(_m, args, kwargs):
        caught.append((args[0] if args else kwargs["hidden_states"],
                       {k: v for k, v in kwargs.items()
                        if k not in ("hidden_states", "past_key_values", "past_key_value", "use_cache")}))
        raise Caught

    h = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    for row in input_ids:
        try:
            model(row.unsqueeze(0), use_cache=False)
        except Caught:
            pass
    h.remove()
    inps = [c[0] for c in caught]
    kws = [c[1] for c in caught]
    for i, layer in enumerate(layers):
        subset = linears_of(layer)
        stats = {n: RunningStats(m.in_features) for n, m in subset.items()}
        hooks = [m.register_forward_hook(lambda _m, a, _o, s=stats[n]: s.add(a[0])) for n, m in subset.items()]
        for x, kw in zip(inps, kws):
            layer(x, **kw)
        for hk in hooks:
            hk.remove()
        for n, m in subset.items():
            prune_linear(i, n, m, stats[n])
        outs = []
        for x, kw in zip(inps, kws):
            o = layer(x, **kw)
            outs.append(o[0] if isinstance(o, tuple) else o)
        inps = outs
