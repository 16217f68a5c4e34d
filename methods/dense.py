"""The unpruned baseline: every comparison is read against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from methods.base import Method
from methods.registry import register
from methods.tags import Tags


@register
@dataclass
class Dense(Method):
    name: ClassVar[str] = "dense"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "baseline (no pruning)"
    tags: ClassVar[Tags] = Tags("Baseline", "None", "None", "Data free", "Without", "Frozen")
    patterns: ClassVar[frozenset[str]] = frozenset({"none"})
    needs_calibration: ClassVar[bool] = False

    streams_blocks: ClassVar[bool] = True   # nothing to prune

    def prune(self, model, ctx) -> dict:
        return {}
