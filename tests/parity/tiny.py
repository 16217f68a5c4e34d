"""Tiny random-init models and contexts for the parity tests (no data files needed)."""

from __future__ import annotations

import copy

import torch

from harness.adapters import adapter_for
from harness.blocks.allocators import build_allocator
from harness.blocks.context import PruneContext
from harness.calibration import CalibrationSet
from harness.hashing import sha256_tokens
from harness.targets import Target
from tests.conftest import make_tiny

# wide enough that DSnoT's candidate lists are never used up within 50 cycles (see test_dsnot)
WIDE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def calibration(n=4, seq=32, vocab=256, seed=0) -> CalibrationSet:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq), generator=g)
    return CalibrationSet(ids, "random", "train", n, seq, seed, "test", sha256_tokens(ids), None, "random", None)


def model_pair(seed: int = 0, **config):
    """Two identical copies of a tiny LLaMA: one for prunebench, one for the reference."""
    model, _tok = make_tiny("llama", seed=seed, **config)
    return model, copy.deepcopy(model)


def context(model, target: Target, calib: CalibrationSet | None = None, allocator="uniform",
            allocator_params=None, batch_size=1) -> PruneContext:
    return PruneContext(adapter=adapter_for(model), target=target, calibration=calib or calibration(),
                        device="cpu", allocator=build_allocator(allocator, allocator_params),
                        batch_size=batch_size, reuse=False)


def masks(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() != 0 for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"}


def unstructured(ratio: float) -> Target:
    return Target(f"unstructured_{int(ratio * 100)}", "unstructured", ratio)


def nm(n: int, m: int) -> Target:
    return Target(f"nm_{n}_{m}", "nm", 1 - n / m, n=n, m=m)
