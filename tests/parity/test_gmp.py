"""GMP against the reference's schedule and selection (google-research/jaxpruner, the code the sparse
scaling-law paper links): PeriodicSchedule + PolynomialSchedule written out from their definitions
(mask update at 0-based step r when r % update_freq == 0 and start <= r <= end; sparsity
target * (1 - (1 - clip(r + 1 - start, 0, end - start) / (end - start)) ** power)), held between
updates; the magnitude pruner keeps the top (1 - s) * numel |W| of each matrix ("uniform" distribution)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.targets import Target
from methods.gmp import cubic_sparsity
from methods.registry import build_method
from tests.conftest import make_tiny


def reference_schedule(steps: int, target: float, start: int, end: int, freq: int, power: int = 3) -> list[float]:
    """Sparsity in force after each optimizer step (index r = 0-based step), as jaxpruner updates it."""
    out, current = [], 0.0
    for r in range(steps):
        if r % freq == 0 and start <= r <= end:
            progress = min(max(r + 1 - start, 0), end - start) / (end - start)
            current = target * (1.0 - (1.0 - progress) ** power)
        out.append(current)
    return out


@pytest.mark.parametrize("steps,freq", [(20_000, 100), (400, 2), (200, 1), (600, 3)])
def test_schedule_matches_the_reference(steps, freq):
    # the reference's run: 20,000 steps, prune from 5,000 to 15,000 every 100 (sparse_pretrain.gin)
    ref = reference_schedule(steps, 0.8, steps // 4, 3 * steps // 4, freq)
    ours = [cubic_sparsity(r + 1, steps, 0.8, 0.25, 0.75, freq) for r in range(steps)]
    assert ours == pytest.approx(ref, abs=1e-12)


def test_method_uses_the_reference_update_frequency():
    # update_every 0.005 of 20,000 steps = the reference's update_freq of 100
    model, _ = make_tiny("llama")
    prune = PruneContext(adapter=adapter_for(model), target=Target("unstructured_50", "unstructured", 0.5),
                         calibration=None, allocator=None, device="cpu")
    hook = build_method("gmp").training_hook(model, SimpleNamespace(adapter=prune.adapter, prune=prune), 20_000)
    assert hook.every == 100 and (hook.start, hook.end) == (0.25, 0.75)


def test_selection_matches_a_top_k_of_magnitudes():
    model, _ = make_tiny("llama", seed=3)
    prune = PruneContext(adapter=adapter_for(model), target=Target("unstructured_75", "unstructured", 0.75),
                         calibration=None, allocator=None, device="cpu")
    ctx = SimpleNamespace(adapter=prune.adapter, prune=prune)
    weights = {n: lin.weight.detach().clone() for n, lin in
               ((f"{i}.{k}", lin) for i, b in enumerate(prune.adapter.blocks(model))
                for k, lin in prune.adapter.linears(b).items())}
    hook = build_method("gmp", {"update_every": 0.5}).training_hook(model, ctx, 4)
    hook(4)                                           # r = 3 = t1: the final level, from the start weights
    for (name, w), lin in zip(weights.items(), hook.linears.values()):
        k = w.numel() - int(w.numel() * 0.75)         # weights kept
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.topk(w.abs().flatten(), k).indices] = True
        assert torch.equal(lin.weight.flatten() != 0, keep), name
