"""Small shared pieces of the block-loop method tests (tiny models, random calibration)."""

from __future__ import annotations

import torch

from harness.adapters import adapter_for
from harness.blocks.allocators import build_allocator
from harness.blocks.context import PruneContext
from harness.calibration import CalibrationSet
from harness.hashing import sha256_tokens
from harness.targets import Target
from tests.conftest import make_tiny


def calibration(n=4, seq=32, vocab=256, seed=0) -> CalibrationSet:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq), generator=g)
    return CalibrationSet(ids, "random", "train", n, seq, seed, "test", sha256_tokens(ids), None, "random", None)


def tiny_context(target: Target, allocator: str = "uniform", **kw):
    model, _tok = make_tiny("llama")
    adapter = adapter_for(model)
    ctx = PruneContext(adapter=adapter, target=target, calibration=calibration(), device="cpu",
                       allocator=build_allocator(allocator), batch_size=2, **kw)
    return model, adapter, ctx


def correlated_inputs(tokens: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs [tokens, width] with strongly correlated channels and uneven scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=g) * 0.3 + torch.eye(width)
    scale = torch.rand(width, generator=g) * 3 + 0.1
    return (torch.randn(tokens, width // 4, generator=g) @ torch.randn(width // 4, width, generator=g)
            + 0.3 * torch.randn(tokens, width, generator=g)) @ mix * scale


def recon_error(x: torch.Tensor, dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """||X W^T - X W_p^T||^2 for inputs x [tokens, in] and weights [out, in]."""
    return float((x @ (dense - pruned).t()).pow(2).sum())
