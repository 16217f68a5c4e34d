"""Compresso's constraint against the reference's formulas (microsoft/Moonlit Compresso/models/l0_module.py),
rewritten here independently on a tiny MHA LLaMA (the reference's layout: every head has its own K/V):

  score(loga)      = 1 - cdf_qz(0, loga) = 1 - sigmoid(log(xn / (1 - xn)) * T - loga), xn = -lo / (hi - lo)
  expected size    = sum(outer(hidden, head)) * params_per_head / hidden + sum(outer(hidden, intermediate)) * 3
                     with params_per_head = 4 d^2 / n_heads (norms ignored)
  sparsity s       = 1 - expected size / (L * (4 d^2 + 3 d F))
  Lagrangian       = lambda_1 (s - t) + lambda_2 (s - t)^2, the lambdas updated by AdamW at lr = -reg_lr
                     (first Adam step: lambda += reg_lr * g / (|g| + eps), an ascent step).
The method's numbers must equal these."""

from __future__ import annotations

import math

import pytest
import torch

from harness.adapters import adapter_for
from harness.hard_concrete import Lagrangian, StructureMasks, constraint_options
from harness.surgery import llama_param_count
from methods.compresso import block_params
from methods.registry import build_method
from tests.conftest import make_tiny

LO, HI, T = -0.1, 1.1, 2 / 3


def reference_score(loga: torch.Tensor) -> torch.Tensor:
    xn = (0 - LO) / (HI - LO)
    logits = math.log(xn) - math.log(1 - xn)
    return 1 - torch.sigmoid(logits * T - loga).clamp(min=1e-6, max=1 - 1e-6)


def reference_sparsity(head_loga, int_loga, hidden_loga, d, f, n_heads, layers):
    head = reference_score(head_loga).reshape(-1)                    # [L * n_heads]
    inter = reference_score(int_loga).reshape(-1)                    # [L * F]
    hidden = reference_score(hidden_loga)                            # [d]
    per_head = 4 * d * d // n_heads
    size = torch.outer(hidden, head).sum() * per_head / d + (torch.outer(hidden, inter).sum(0) * 3).sum()
    return 1 - size / (layers * (4 * d * d + 3 * d * f))


def test_expected_block_sparsity_is_the_references():
    model, _ = make_tiny("llama", num_key_value_heads=4)                # MHA: 4 heads, d 64, F 128, 4 layers
    cfg = model.config
    method = build_method("compresso", {"heads": "kv_group"})          # MHA: one gate per head (its own group)
    masks = StructureMasks(model, adapter_for(model), ("heads", "intermediate", "hidden"),
                           head_granularity=method.heads, init_keep=method.init_keep, seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in masks.masks.values():                                # spread the gates over open and closed
            m.log_alpha.copy_(torch.empty(m.log_alpha.shape).uniform_(-4, 4, generator=gen))
    dense = float(block_params(cfg, llama_param_count(cfg), cfg.hidden_size))
    ours = 1 - block_params(cfg, masks.expected_params(), masks.expected_counts()["hidden"]) / dense
    want = reference_sparsity(masks.masks["heads"].log_alpha, masks.masks["intermediate"].log_alpha,
                              masks.masks["hidden"].log_alpha, cfg.hidden_size, cfg.intermediate_size,
                              cfg.num_attention_heads, cfg.num_hidden_layers)
    assert dense == cfg.num_hidden_layers * (4 * 64 * 64 + 3 * 64 * 128)
    assert float(ours) == pytest.approx(float(want), abs=1e-5)
    masks.remove()


def test_one_lagrangian_step_is_the_references_ascent():
    """The method's constraint (harness.hard_concrete.Lagrangian on one global sparsity) and its
    optimizer options for the lambdas (harness.hard_concrete.constraint_options) give the reference's ascent step."""
    reg_lr, s, t = 0.1, torch.tensor(0.12), 0.3
    lag = Lagrangian(("global",))
    lambda_1, lambda_2 = lag.lambdas["global_1"], lag.lambdas["global_2"]
    with torch.no_grad():
        lambda_1.fill_(0.2)
        lambda_2.fill_(-0.05)
    before = [p.detach().clone() for p in (lambda_1, lambda_2)]
    opt = torch.optim.AdamW([{"params": [p], **constraint_options(f"lagrangian.{n}", reg_lr)}
                             for n, p in lag.named_parameters()], weight_decay=0.0)
    lag({"global": s}, {"global": t}).backward()
    opt.step()
    grads = [float(s - t), float((s - t) ** 2)]                      # d loss / d lambda_1, lambda_2
    for b, g, p in zip(before, grads, (lambda_1, lambda_2)):
        # AdamW at lr = -reg_lr, first step: p - (-reg_lr) * g / (|g| + eps)
        assert float(p) == pytest.approx(float(b) + reg_lr * g / (abs(g) + 1e-8), abs=1e-6)
