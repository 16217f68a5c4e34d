"""Statistics of block linears that need the calibration *backward* pass (K-FAC style curvature).

One full-model forward + backward of the LM loss per calibration micro-batch. Forward hooks see
each linear's input x [b, s, in]; a tensor hook on each linear's output sees dL/d(output)
g [b, s, out]. No parameter gradient is computed (every parameter is frozen for the pass and the
embedding output is made to require grad instead), so the pass costs activation gradients only.

Collectors are registered by name, like the forward collectors of harness.blocks.collectors:
  input_cov        A = sum_tokens x x^T / n_tokens        [in, in]   (one per input group)
  output_grad_cov  G = sum_tokens g g^T / n_tokens        [out, out] (one per linear)
g is the gradient of each micro-batch's mean token loss (the HF `labels=` loss), so with batch
size 1 this is the LLM Surgeon's empirical-Fisher K-FAC factors (`--use_iad`, `--fisher_samples 0`).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.registry import Registry


class InputCovariance:
    """A = E[x x^T] over all calibration tokens ([in, in], float32)."""

    name = "input_cov"
    side = "input"

    def __init__(self, features: int, device):
        self.sum = torch.zeros(features, features, dtype=torch.float32, device=device)
        self.n_tokens = 0

    def update(self, x: torch.Tensor) -> None:  # x: [batch, seq, in]
        flat = x.detach().reshape(-1, x.shape[-1]).float()   # [tokens, in]
        self.n_tokens += flat.shape[0]
        self.sum.addmm_(flat.t(), flat)

    def result(self) -> dict[str, torch.Tensor]:
        return {self.name: self.sum / max(self.n_tokens, 1)}


class OutputGradCovariance(InputCovariance):
    """G = E[g g^T] of the loss gradient w.r.t. the linear's output ([out, out], float32)."""

    name = "output_grad_cov"
    side = "output_grad"


# statistic name -> factory(features, device) whose `side` is "input" or "output_grad"
BACKWARD_COLLECTORS: Registry = Registry("backward statistic", {
    "input_cov": InputCovariance, "output_grad_cov": OutputGradCovariance})


def collect_backward_statistics(model: nn.Module, linears: dict[str, nn.Linear],
                                input_groups: list[tuple[str, ...]], input_ids: torch.Tensor,
                                statistics: tuple[str, ...], batch_size: int = 1,
                                device: str = "cpu") -> tuple[dict[str, dict[str, torch.Tensor]], float]:
    """({linear name: {statistic: tensor}}, mean calibration loss).

    `linears`: the linears to observe, by any unique name; `input_groups`: tuples of those names
    that read the same input (input-side statistics are computed once per group and shared, not
    copied); every name must be in exactly one group. The model's requires_grad flags are restored.
    """
    in_cols, out_cols = _collectors(linears, input_groups, statistics, device)
    losses = _observe_backward(model, linears, in_cols, out_cols, input_ids, batch_size, device)
    return _gathered(linears, in_cols, out_cols), sum(losses) / max(len(losses), 1)


def _collectors(linears: dict[str, nn.Linear], input_groups: list[tuple[str, ...]], statistics: tuple[str, ...],
                device: str) -> tuple[dict, dict]:
    """({input group: its input-side collectors}, {linear name: its output-gradient collectors})."""
    for s in statistics:
        if s not in BACKWARD_COLLECTORS:
            raise BACKWARD_COLLECTORS.unknown(s)
    grouped = [n for g in input_groups for n in g]
    if sorted(grouped) != sorted(linears):
        raise ValueError("input_groups must partition the observed linears")
    in_stats = [s for s in statistics if BACKWARD_COLLECTORS.get(s).side == "input"]
    out_stats = [s for s in statistics if BACKWARD_COLLECTORS.get(s).side == "output_grad"]
    in_cols = {g: [BACKWARD_COLLECTORS.get(s)(linears[g[0]].in_features, device) for s in in_stats]
               for g in input_groups}
    out_cols = {n: [BACKWARD_COLLECTORS.get(s)(lin.out_features, device) for s in out_stats]
                for n, lin in linears.items()}
    return in_cols, out_cols


def _observe_backward(model: nn.Module, linears: dict[str, nn.Linear], in_cols: dict, out_cols: dict,
                      input_ids: torch.Tensor, batch_size: int, device: str) -> list[float]:
    """Forward and backward over `input_ids` ([n, seq]) in batches, feeding the collectors from hooks;
    the calibration loss of each batch. Parameters get no gradient (requires_grad restored after)."""
    first_of_group = {g[0]: g for g in in_cols}
    handles = []

    def forward_hook(name):
        def hook(_mod, args, out):
            if name in first_of_group:
                for c in in_cols[first_of_group[name]]:
                    c.update(args[0])
            if out_cols[name] and out.requires_grad:
                out.register_hook(grad_hook(name))
        return hook

    def grad_hook(name):
        def hook(g):   # g: dL/d(output) [batch, seq, out]
            for c in out_cols[name]:
                c.update(g)
        return hook

    def embedding_hook(_mod, _args, out):
        return out.requires_grad_(True)   # gradients flow through activations only

    params = list(model.parameters())
    was = [p.requires_grad for p in params]
    losses = []
    try:
        for p in params:
            p.requires_grad_(False)
        for name, lin in linears.items():
            handles.append(lin.register_forward_hook(forward_hook(name)))
        handles.append(model.get_input_embeddings().register_forward_hook(embedding_hook))
        with torch.enable_grad():
            for start in range(0, input_ids.shape[0], batch_size):
                ids = input_ids[start:start + batch_size].to(device)
                loss = model(ids, labels=ids, use_cache=False).loss
                loss.backward()
                losses.append(loss.item())
    finally:
        for h in handles:
            h.remove()
        for p, w in zip(params, was):
            p.requires_grad_(w)
    return losses


def _gathered(linears: dict[str, nn.Linear], in_cols: dict, out_cols: dict) -> dict[str, dict[str, torch.Tensor]]:
    """{linear name: {statistic: tensor}}; a group's input statistics are shared by its members."""
    stats: dict[str, dict[str, torch.Tensor]] = {n: {} for n in linears}
    for g, cols in in_cols.items():
        merged: dict[str, torch.Tensor] = {}
        for c in cols:
            merged.update(c.result())
        for n in g:
            stats[n].update(merged)   # the same tensors for every member of the group
    for n, cols in out_cols.items():
        for c in cols:
            stats[n].update(c.result())
    return stats
