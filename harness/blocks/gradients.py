"""Gradients of the calibration LM loss, for Taylor-style importance (LLM-Pruner, Shortened LLaMA).

One backward per micro-batch; `grad` is the gradient of the mean loss over all calibration
samples, `fisher` (optional) the mean over micro-batches of the squared per-micro-batch gradient,
the empirical-Fisher diagonal that approximates the Hessian diagonal (LLM-Pruner, Sec. 3.2).
"""

from __future__ import annotations

import torch
from torch import nn


def calibration_gradients(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 1,
                          device: str = "cpu", fisher: bool = False
                          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Returns ({param name: grad}, {param name: fisher diag} or None). Shapes equal the params'.
    The model's parameters are left with requires_grad as they were and .grad cleared."""
    params = dict(model.named_parameters())  # tied weights appear once
    was = {n: p.requires_grad for n, p in params.items()}
    grads = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    fish = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()} if fisher else None
    n_batches = 0
    try:
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        chunks = list(range(0, input_ids.shape[0], batch_size))
        for start in chunks:
            ids = input_ids[start:start + batch_size].to(device)
            loss = model(ids, labels=ids, use_cache=False).loss
            loss.backward()
            for n, p in params.items():
                if p.grad is None:
                    continue
                g = p.grad.float()
                grads[n] += g
                if fish is not None:
                    fish[n] += g * g
                p.grad = None
            n_batches += 1
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(was[n])
    for n in grads:
        grads[n] /= n_batches
        if fish is not None:
            fish[n] /= n_batches
    return grads, fish
