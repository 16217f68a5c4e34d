"""The shared block-by-block calibration loop (SparseGPT/Wanda "sequential" pipeline).

For each decoder block i:
  1. forward the calibration hidden states through block i with hooks collecting the statistics
     the method asks for (one collector per input group); this forward also yields the block's
     dense outputs;
  2. hand a BlockContext to the method, which prunes block i in place;
  3. propagate: block i+1 receives the *pruned* block's outputs (a second forward, as in the
     reference code) or, with propagation="dense", the dense outputs (ablation, no second forward).

Peak memory beyond the model: one block on the device plus the calibration activations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.blocks.cache import BlockCache, stats_key
from harness.blocks.capture import BlockInputs, capture_block_inputs, run_block
from harness.blocks.collectors import make_collector
from harness.blocks.spread import replicas, run_spread
from harness.offload import session
from harness.progress import Progress

PROPAGATIONS = ("pruned", "dense")


@dataclass
class BlockContext:
    index: int
    n_blocks: int
    block: nn.Module
    adapter: FamilyAdapter
    linears: dict[str, nn.Linear]             # block-relative name -> linear
    stats: dict[str, dict[str, torch.Tensor]]  # linear name -> statistic name -> tensor
    inputs: BlockInputs                       # what this block receives
    dense_outputs: list[torch.Tensor]         # block outputs before pruning, per micro-batch
    sparsity: float                           # this block's allocated ratio

    def run(self) -> list[torch.Tensor]:
        """Outputs of the block in its current (possibly pruned) state."""
        return run_block(self.block, self.adapter, self.inputs)


@dataclass
class LoopTiming:
    capture_s: float = 0.0
    forward_s: float = 0.0        # calibration forwards (collection + propagation)
    collect_s: float = 0.0        # part of forward_s spent in the statistics hooks
    method_s: float = 0.0         # the method's own work
    n_forwards: int = 0
    reused: dict = field(default_factory=dict)   # what came from the cache (harness.blocks.cache)
    unreached: list = field(default_factory=list)  # linears no calibration token was routed to


def _run_unreached_experts(block: nn.Module, unreached: list[tuple[str, ...]], moe_inputs: list[torch.Tensor]) -> None:
    """Run each expert that no token was routed to on every token entering its MoE layer."""
    from harness.experts import routed_experts

    found = routed_experts(block)
    if found is None:
        return
    path, experts = found
    prefix = f"{path}.experts."
    idx = sorted({int(g[0][len(prefix):].split(".")[0]) for g in unreached if g[0].startswith(prefix)})
    for e in idx:
        for x in moe_inputs:
            experts.run_expert(e, x.reshape(-1, x.shape[-1]))


def _attach(block: nn.Module, adapter: FamilyAdapter, statistics: tuple[str, ...], device, share: bool,
            reached: set, moe_inputs: list, primary) -> tuple[dict, list, list]:
    """Collectors (one per input group, or per linear when not `share`) hooked onto `block`'s
    linears: ({group: [collector]}, hook handles, [seconds in the hooks]: one per copy, as copies
    run in threads of their own). MoE layer inputs are kept on `primary`."""
    linears = adapter.linears(block)
    collectors: dict[tuple[str, ...], list] = {}
    handles = []
    spent = [0.0]
    groups = adapter.input_groups(block) if share else [(name,) for name in linears]
    for group in groups:
        first = linears[group[0]]
        cols = [make_collector(s, first.in_features, device) for s in statistics]
        collectors[group] = cols

        def hook(_mod, args, _out, cols=cols, group=group):
            t = time.perf_counter()
            x = args[0] if args[0].dim() == 3 else args[0][None]   # experts see [tokens, in]
            reached.add(group)
            for c in cols:
                c.update(x)
            spent[0] += time.perf_counter() - t

        handles.append(first.register_forward_hook(hook))
    if adapter.moe and adapter.mlp:
        handles.append(adapter.mlp_module(block).register_forward_hook(
            lambda _m, args, _o: moe_inputs.append(args[0].to(primary))))
    return collectors, handles, spent


@torch.no_grad()
def _collect(block: nn.Module, adapter: FamilyAdapter, inputs: BlockInputs, statistics: tuple[str, ...],
             devices: tuple[str, ...], share: bool = True
             ) -> tuple[dict[str, dict[str, torch.Tensor]], list[torch.Tensor], float, list[str]]:
    """Statistics per linear (one collector per input group, or per linear when share=False),
    the block's outputs, the seconds spent inside the collectors, and the linears no calibration
    token reached (experts the router never chose). With several `devices`, the micro-batches are
    spread over copies of the block (harness.blocks.spread), each with its own collectors, merged
    onto the first device's.

    An expert's linears see only the tokens routed to it. One that sees none gets the statistics
    of every token entering its MoE layer instead (so it is still pruned by the method's own
    criterion, not left dense or pruned on zeros) and is named in the returned list."""
    copies = replicas(block, devices)
    reached: set[tuple[str, ...]] = set()
    moe_inputs: list[torch.Tensor] = []
    attached = [_attach(c, adapter, statistics, d, share, reached, moe_inputs, devices[0])
                for c, d in zip(copies, devices)] if statistics else [({}, [], [0.0])]
    collectors = attached[0][0]
    try:
        outputs = run_spread(copies, devices, adapter, inputs)
        unreached = [g for g in collectors if g not in reached]
        if unreached and moe_inputs:
            _run_unreached_experts(block, unreached, moe_inputs)   # hooks still on: they collect
    finally:
        for _cols, handles, _spent in attached:
            for h in handles:
                h.remove()
    for other, _handles, _spent in attached[1:]:
        for group, cols in other.items():
            for mine, theirs in zip(collectors[group], cols):
                mine.merge(theirs)
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for group, cols in collectors.items():
        merged: dict[str, torch.Tensor] = {}
        for c in cols:
            merged.update(c.result())
        for name in group:  # shared, not copied: one statistic per distinct input
            stats[name] = merged
    return stats, outputs, sum(a[2][0] for a in attached), [n for g in unreached for n in g]


def block_loop(model: nn.Module, adapter: FamilyAdapter, input_ids: torch.Tensor,
               visit: Callable[[BlockContext], None], block_ratios: list[float], *,
               statistics: tuple[str, ...] = (), device: str = "cpu", batch_size: int = 1,
               propagation: str = "pruned", inputs: BlockInputs | None = None,
               share_statistics: bool = True, cache: BlockCache | None = None,
               modifies: bool = True, desc: str = "prune", devices: tuple[str, ...] | None = None) -> LoopTiming:
    """Each block is onloaded (harness.offload) for its turn only and, when `modifies`, written
    back (disk offload: to the pruned model's staging files) after it.
    `share_statistics=False`: one collector per linear instead of per input group (only to
    measure what sharing saves). `cache`: reuse block-0 inputs and, with dense propagation, each
    block's statistics and dense outputs (see harness.blocks.cache). Progress (block i/N, s/block,
    ETA, heartbeat inside long blocks) goes to a bar and the log under `desc` (harness.progress).
    `devices` (runtime.devices): the calibration micro-batches of each forward spread over copies
    of the block on these devices (harness.blocks.spread); the first replaces `device`."""
    if propagation not in PROPAGATIONS:
        raise ValueError(f"unknown propagation {propagation!r}; one of {', '.join(PROPAGATIONS)}")
    devices = tuple(devices) if devices else (device,)
    device = devices[0]   # the primary: the block is onloaded and pruned there
    timing = LoopTiming()
    timing.reused = {"block_inputs": False, "dense_block_statistics": 0}
    t = time.perf_counter()
    if inputs is None and cache is not None:
        inputs = cache.load_inputs(device)
        timing.reused["block_inputs"] = inputs is not None
    if inputs is None:
        inputs = capture_block_inputs(model, adapter, input_ids, batch_size, device)
        if cache is not None:
            cache.save_inputs(inputs)
    timing.capture_s = time.perf_counter() - t
    key = stats_key(statistics, share_statistics)
    use_dense_cache = cache is not None and propagation == "dense"
    blocks = adapter.blocks(model)
    with Progress(desc, total=len(blocks), unit="block") as progress:
        for i, block in enumerate(blocks):
            with session(model, block, modifies=modifies):
                inputs = _visit_block(i, block, blocks, adapter, inputs, visit, block_ratios, statistics, devices,
                                      propagation, share_statistics, cache if use_dense_cache else None, key,
                                      timing)
            progress.advance(sparsity=float(block_ratios[i]))
    return timing


def _visit_block(i, block, blocks, adapter, inputs, visit, block_ratios, statistics, devices, propagation,
                 share_statistics, cache, key, timing) -> BlockInputs:
    """Collect, visit and propagate one (onloaded) block; returns the next block's inputs."""
    t = time.perf_counter()
    cached = cache.load_dense(i, key, devices[0]) if cache is not None else None
    if cached is not None:
        stats, dense_out = cached
        timing.reused["dense_block_statistics"] += 1
        timing.capture_s += time.perf_counter() - t
    else:
        stats, dense_out, collect_s, unreached = _collect(block, adapter, inputs, statistics, devices,
                                                          share_statistics)
        if unreached:
            timing.unreached.extend(f"{adapter.block_prefix(i)}.{n}" for n in unreached)
        timing.forward_s += time.perf_counter() - t
        timing.collect_s += collect_s
        timing.n_forwards += 1
        if cache is not None:
            cache.save_dense(i, key, stats, dense_out)
    ctx = BlockContext(i, len(blocks), block, adapter, adapter.linears(block), stats, inputs,
                       dense_out, block_ratios[i])
    t = time.perf_counter()
    visit(ctx)
    timing.method_s += time.perf_counter() - t
    if propagation == "pruned":
        t = time.perf_counter()
        outputs = run_spread(replicas(block, devices), devices, adapter, inputs)
        timing.forward_s += time.perf_counter() - t
        timing.n_forwards += 1
    else:
        outputs = dense_out
    return inputs.advance(outputs)
