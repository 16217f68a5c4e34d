"""Sheared LLaMA's core computations against the reference's formulas (princeton-nlp/LLM-Shearing,
llmshearing/models/l0_module.py and llmshearing/callbacks/dynamic_loading_callback.py), rewritten
here independently:

  cdf_qz(loga)        = clamp(sigmoid(log(xn / (1 - xn)) * T - loga), eps, 1 - eps), xn = -lo / (hi - lo)
  score               = 1 - cdf_qz(loga)                       (P(gate != 0), the L0 term)
  sample              = hardtanh(sigmoid((log u - log(1 - u) + loga) / T) * (hi - lo) + lo, 0, 1)
  deterministic_z     = sigmoid(loga / T * 0.8) with the (n - target) smallest set to 0
  expected sparsity   = 1 - score.sum(-1) / mask_size           (per layer for per-layer masks)
  lagrangian          = mean(lambda_1 (s - t) + lambda_2 (s - t)^2), summed over pruning modules
  target warm-up      = (t - start) * min(1, step / warmup) + start
  domain update       = (1 - c) softmax(log w + eta (loss - ref)) + c / k,  eta = 1, c = 1e-4 ("doremi")
The harness's numbers must equal these, and the method's defaults must be the reference's."""

from __future__ import annotations

import math

import pytest
import torch

from harness.adapters import adapter_for
from harness.hard_concrete import HardConcrete, Lagrangian, StructureMasks, warmup_target
from harness.recovery.domains import update_proportions
from methods.registry import build_method
from tests.conftest import make_tiny

LO, HI, T, EPS = -0.1, 1.1, 2 / 3, 1e-6


def ref_cdf_qz(loga: torch.Tensor) -> torch.Tensor:
    xn = (0 - LO) / (HI - LO)
    return torch.sigmoid((math.log(xn) - math.log(1 - xn)) * T - loga).clamp(EPS, 1 - EPS)


def ref_deterministic(loga: torch.Tensor, keep: int) -> torch.Tensor:
    """One row of the reference's _deterministic_z with a target mask size."""
    soft = torch.sigmoid(loga / T * 0.8)
    zeros = loga.numel() - keep
    if zeros > 0:
        soft = soft.clone()
        soft[torch.topk(soft, k=zeros, largest=False).indices] = 0.0
    return soft


def ref_update(prop: list[float], losses: list[float], target: list[float]) -> torch.Tensor:
    diff = torch.tensor(losses, dtype=torch.float64) - torch.tensor(target, dtype=torch.float64)
    alpha = torch.softmax(torch.log(torch.tensor(prop, dtype=torch.float64)) + 1.0 * diff, dim=0)
    return (1 - 1e-4) * alpha + 1e-4 / len(prop)


def _gates(shape, seed=0) -> HardConcrete:
    g = HardConcrete(shape)
    with torch.no_grad():   # distinct values across the reference's clamp range
        g.log_alpha.copy_(torch.empty(shape).uniform_(math.log(1e-2), math.log(1e2),
                                                     generator=torch.Generator().manual_seed(seed)))
    return g


def test_l0_score_equals_reference_cdf():
    g = _gates((4, 24))
    torch.testing.assert_close(g.prob_nonzero().detach(), 1 - ref_cdf_qz(g.log_alpha.detach()),
                               rtol=0, atol=2 * EPS)


def test_sample_equals_reference_quantile_for_the_same_uniforms():
    g = _gates((3, 16), seed=1)
    u = torch.rand((3, 16), generator=torch.Generator().manual_seed(7)).clamp(EPS, 1 - EPS)
    la = g.log_alpha.detach()
    expect = torch.clamp(torch.sigmoid((torch.log(u) - torch.log(1 - u) + la) / T) * (HI - LO) + LO, 0, 1)
    torch.testing.assert_close(g.sample(torch.Generator().manual_seed(7)).detach(), expect)


@pytest.mark.parametrize("keep", [1, 5, 16])
def test_deterministic_mask_equals_reference_per_row(keep):
    g = _gates((3, 16), seed=2)
    ours = g.deterministic(keep)
    for row in range(3):
        torch.testing.assert_close(ours[row], ref_deterministic(g.log_alpha.detach()[row], keep))


def test_expected_sparsity_and_lagrangian_equal_reference():
    model, _ = make_tiny("llama")
    masks = StructureMasks(model, adapter_for(model), ("layers", "heads", "intermediate", "hidden"),
                           head_granularity="query")
    for i, m in enumerate(masks.masks.values()):
        with torch.no_grad():
            m.log_alpha.copy_(torch.empty(m.log_alpha.shape).uniform_(
                -2, 4, generator=torch.Generator().manual_seed(10 + i)))
    lag = Lagrangian(masks.structures)
    with torch.no_grad():
        for j, p in enumerate(lag.lambdas.values()):
            p.fill_(0.3 * (j + 1) * (-1) ** j)
    expected = masks.expected_sparsity()
    target = {"layers": 0.25, "heads": 0.5, "intermediate": 0.4, "hidden": 0.2}
    want = 0.0
    for s, m in masks.masks.items():
        score = 1 - ref_cdf_qz(m.log_alpha.detach())
        rows = score.reshape(score.shape[0], -1) if s in ("heads", "intermediate") else score.reshape(1, -1)
        sparsity = 1 - rows.sum(-1) / rows.shape[-1]          # [L] or [1]
        if s in ("layers", "hidden"):
            sparsity = sparsity[0]
        torch.testing.assert_close(expected[s].detach(), sparsity, rtol=0, atol=1e-5)
        l1, l2 = float(lag.lambdas[f"{s}_1"].detach()), float(lag.lambdas[f"{s}_2"].detach())
        want += (l1 * (sparsity - target[s]) + l2 * (sparsity - target[s]) ** 2).mean()
    torch.testing.assert_close(lag(expected, target).detach(), torch.as_tensor(want, dtype=torch.float32),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("step", [0, 3, 64, 640, 1000])
def test_target_warmup_equals_reference(step):
    final, start, warm = 0.5, 0.1, 640
    assert warmup_target(final, step, warm, start) == pytest.approx((final - start) * min(1, step / warm) + start)


def test_domain_update_equals_reference_and_keeps_the_signed_gap():
    prop, losses, ref = [0.5, 0.3, 0.2], [3.1, 2.2, 4.0], [3.0, 2.5, 3.2]
    got = update_proportions(torch.tensor(prop, dtype=torch.float64), torch.tensor(losses, dtype=torch.float64),
                             torch.tensor(ref, dtype=torch.float64), "doremi")
    torch.testing.assert_close(got, ref_update(prop, losses, ref), rtol=0, atol=1e-12)
    # the reference code does not clip a negative gap: a domain below its reference loses weight
    assert got[1] < prop[1]


def test_method_defaults_are_the_reference_run():
    m = build_method("sheared_llama", {})
    assert (m.steps, m.batch_size, m.seq_len) == (3200, 32, 4096)
    assert (m.lr, m.lag_lr, m.init_log_alpha, m.temperature) == (1e-4, 1.0, 5.0, pytest.approx(T))
    assert (m.warmup_steps, m.lagrangian_warmup_steps, m.update_every) == (320, 640, 50)
    assert m.update_type == "doremi" and m.clip_gap is False
