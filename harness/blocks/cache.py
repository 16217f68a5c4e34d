"""On-disk reuse of work whose inputs are identical across a sweep.

Keyed by (model sha256, calibration token-ids sha256, dtype, micro-batch size): the *block-0
inputs* (embedding output + the kwargs every block receives) do not depend on the method or the
sparsity level, so any second run on the same model and calibration set skips the capture.

With `prune.propagation=dense` block i sees the *dense* model's hidden states, so its statistics
and its dense outputs are also identical at every sparsity level and for every method asking for
the same statistics: they are stored per block and a later run skips the calibration forward of
that block entirely. With the default pruned propagation they depend on the blocks pruned before
and are never cached (the loop does not ask).

Files are written atomically (temp file + rename) with a sha256 sidecar (harness.digests), verified
on every load (a bad entry is dropped and recomputed) and loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.blocks.capture import BlockInputs, move_shared
from harness.digests import drop, verify_file
from harness.files import write_atomic

CACHE_VERSION = "2"   # 2: each block's own kwargs


def _save(obj, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp), digest=True)


def _load(path: Path):
    """The entry, verified against the digest written with it; a bad entry is dropped (None)."""
    if not path.is_file():
        return None
    if verify_file(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a corrupt or foreign cache entry is recomputed, not fatal
            pass
    drop(path, "digest mismatch or unreadable")
    return None


@dataclass
class BlockCache:
    root: Path   # one directory per (model, calibration tokens, dtype, micro-batch)

    def load_inputs(self, device) -> BlockInputs | None:
        obj = _load(self.root / "block0_inputs.pt")
        if obj is None:
            return None
        if "per_block" not in obj:
            return None
        memo: dict = {}   # torch.load keeps the sharing between blocks; the move keeps it too
        return BlockInputs([h.to(device) for h in obj["hidden"]],
                           [[move_shared(kw, device, memo) for kw in row] for row in obj["per_block"]])

    def save_inputs(self, inputs: BlockInputs) -> None:
        # one torch.save of the whole structure keeps the sharing of tensors between blocks
        memo: dict = {}
        _save({"hidden": [h.cpu() for h in inputs.hidden],
               "per_block": [[move_shared(kw, "cpu", memo) for kw in row] for row in inputs.per_block]},
              self.root / "block0_inputs.pt")

    def _stats_path(self, index: int, stats_key: str) -> Path:
        return self.root / "dense" / f"block{index}_stats_{stats_key}.pt"

    def _out_path(self, index: int) -> Path:
        return self.root / "dense" / f"block{index}_outputs.pt"

    def load_dense(self, index: int, stats_key: str, device):
        """(stats, dense outputs) of block `index` under dense propagation, or None."""
        stats = _load(self._stats_path(index, stats_key))
        outs = _load(self._out_path(index)) if stats is not None else None
        if outs is None:
            return None
        # pickling kept the sharing: members of one input group point at one dict
        moved: dict[int, dict] = {}
        out_stats = {}
        for name, d in stats.items():
            if id(d) not in moved:
                moved[id(d)] = {k: v.to(device) for k, v in d.items()}
            out_stats[name] = moved[id(d)]
        return out_stats, [o.to(device) for o in outs]

    def save_dense(self, index: int, stats_key: str, stats: dict, outputs: list[torch.Tensor]) -> None:
        moved: dict[int, dict] = {}
        cpu_stats = {}
        for name, d in stats.items():
            if id(d) not in moved:
                moved[id(d)] = {k: v.cpu() for k, v in d.items()}
            cpu_stats[name] = moved[id(d)]
        if not self._out_path(index).is_file():
            _save([o.cpu() for o in outputs], self._out_path(index))
        _save(cpu_stats, self._stats_path(index, stats_key))



# statistics whose accumulation changed (cached values of an older order are not reused)
_STATS_VERSION = {"input_norm": 2}   # 2: the reference's running-mean order


def stats_key(statistics: tuple[str, ...], shared: bool) -> str:
    names = sorted(f"{s}@{_STATS_VERSION[s]}" if s in _STATS_VERSION else s for s in statistics)
    return "-".join(names) + ("" if shared else "-per-linear")


def block_cache(cache_dir: Path | None, model_sha256: str | None, tokens_sha256: str | None,
                dtype: torch.dtype, batch_size: int) -> BlockCache | None:
    """The cache directory for this key, or None when any part of the key is unknown."""
    if cache_dir is None or not model_sha256 or not tokens_sha256:
        return None
    key = json.dumps({"v": CACHE_VERSION, "model": model_sha256, "tokens": tokens_sha256,
                      "dtype": str(dtype), "batch_size": int(batch_size)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return BlockCache(Path(cache_dir) / "blocks" / digest)
