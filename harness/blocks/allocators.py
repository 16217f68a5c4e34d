"""Sparsity allocators: how a target ratio is spread over decoder blocks.

An allocator returns one ratio per block whose mean equals the target. It is its own config axis
(conf/allocator/), usable with any score method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from harness.blocks.context import PruneContext


@dataclass
class Uniform:
    name: ClassVar[str] = "uniform"
    needs_calibration: ClassVar[bool] = False

    def allocate(self, model: nn.Module, ctx: PruneContext) -> list[float]:
        return [ctx.target.ratio] * len(ctx.adapter.blocks(model))


ALLOCATORS: dict[str, type] = {"uniform": Uniform}


def build_allocator(name: str, params: dict | None = None):
    if name not in ALLOCATORS:
        import difflib
        near = difflib.get_close_matches(name, ALLOCATORS, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ValueError(f"unknown allocator {name!r}{hint}; known: {', '.join(sorted(ALLOCATORS))}")
    try:
        return ALLOCATORS[name](**(params or {}))
    except TypeError as exc:
        raise ValueError(f"bad parameters for allocator {name!r}: {exc}") from None
