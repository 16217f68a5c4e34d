"""What a pruning method receives: typed, explicit, no `args` object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.adapters import FamilyAdapter
from harness.calibration import CalibrationSet
from harness.targets import Target


@dataclass
class PruneContext:
    adapter: FamilyAdapter
    target: Target
    calibration: CalibrationSet | None
    allocator: Any                      # harness.blocks.allocators.Allocator
    device: str
    batch_size: int = 1                 # calibration micro-batch
    propagation: str = "pruned"         # "pruned": block i+1 sees pruned block i; "dense": ablation
    seed: int = 0
    tokenizer: Any = None
    cache_dir: Path | None = None
    model_sha256: str | None = None     # identity of the loaded weights (keys the block cache)
    reuse: bool = True                  # reuse cached block inputs / dense statistics (cache_dir)
    data_dir: Path | None = None        # local data (methods sampling task rows: harness.tasks)
    devices: tuple = ()                 # runtime.devices: micro-batches spread (harness.blocks.spread)
    checkpoint_dir: Path | None = None  # methods that train while pruning: resumable checkpoints here

    def block_cache(self, model):
        """The on-disk cache for this model + calibration set, or None (harness.blocks.cache)."""
        from harness.blocks.cache import block_cache

        if not self.reuse or self.calibration is None:
            return None
        dtype = next(model.parameters()).dtype
        return block_cache(self.cache_dir, self.model_sha256, self.calibration.tokens_sha256, dtype,
                           self.batch_size)
