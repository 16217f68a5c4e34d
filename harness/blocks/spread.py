"""Calibration micro-batches of one block spread across several devices (`runtime.devices`).

The block loop keeps its shape: one block at a time, onloaded to the first device (the primary,
where the method prunes it and where the hidden states and statistics live). For each calibration
forward (collection, then propagation) every further device gets a fresh copy of the block as it
is now; micro-batch k runs on devices[k % D], one thread per device (kernels release the GIL, so
GPUs overlap; CPU "devices" only share the host's cores). Outputs come back to the primary in
micro-batch order; each copy has its own statistics collectors, summed onto the primary's
(harness.blocks.collectors `merge`). Block outputs are those of one device; statistics equal one
device's up to float summation order (tests/unit/test_spread.py, with devices [cpu, cpu]).

Why micro-batches, not blocks: block i+1's inputs are block i's pruned outputs, so blocks are
sequential; the calibration samples of one block are not. Peak memory per extra device: one block
copy plus its share of activations (the stored hidden states stay on the primary).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.blocks.capture import BlockInputs, move_shared, run_block


def replicas(block: nn.Module, devices: tuple[str, ...]) -> list[nn.Module]:
    """[block] + a copy of it on each further device. A copy carries no hooks: the offload hooks
    of the original (harness.offload) know only the original, and statistics hooks are attached
    per copy by the caller."""
    copies = [block]
    for device in devices[1:]:
        c = copy.deepcopy(block).to(device)
        for mod in c.modules():
            mod._forward_pre_hooks.clear()
            mod._forward_hooks.clear()
        copies.append(c)
    return copies


def run_spread(copies: list[nn.Module], devices: tuple[str, ...], adapter: FamilyAdapter,
               inputs: BlockInputs) -> list[torch.Tensor]:
    """Outputs per micro-batch [b_k, seq, hidden] on the primary device, micro-batch k computed by
    copies[k % D] on devices[k % D]. One device: run_block, unchanged."""
    if len(copies) == 1:
        return run_block(copies[0], adapter, inputs)
    n = len(inputs.hidden)
    outputs: list[torch.Tensor | None] = [None] * n
    primary = inputs.hidden[0].device if n else torch.device(devices[0])

    def work(r: int) -> None:
        memo: dict = {}   # kwargs shared between micro-batches are moved once per device
        with torch.no_grad():   # grad mode is per thread
            for k in range(r, n, len(copies)):
                h = inputs.hidden[k].to(devices[r])
                kw = move_shared(inputs.kwargs[k], devices[r], memo)
                outputs[k] = adapter.block_output(copies[r](h, **kw)).to(primary)

    with ThreadPoolExecutor(max_workers=len(copies)) as pool:
        for f in [pool.submit(work, r) for r in range(len(copies))]:
            f.result()   # re-raises a device's error here
    return outputs


def check_devices(devices) -> tuple[str, ...]:
    """`runtime.devices` as a tuple of device names (None -> ()); a malformed name raises
    ValueError here, at validation, before any model is loaded."""
    names = tuple(str(d) for d in devices or ())
    for name in names:
        try:
            torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"runtime.devices: {name!r} is not a device name ({exc})") from None
    return names
