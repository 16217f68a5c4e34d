"""Capture what each decoder block receives and run single blocks on stored hidden states."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.offload import session


class _StopForward(Exception):
    """Raised after the last block's inputs are recorded: nothing after them is needed."""


# Keyword arguments a block receives that must not be replayed (we never build a KV cache here).
_DROP_KWARGS = ("past_key_values", "past_key_value", "layer_past", "cache", "use_cache",
                "output_attentions")


@dataclass
class BlockInputs:
    """Hidden states entering the current block, stored per micro-batch, and what the model passes
    to each block besides them.

    hidden[k]: [b_k, seq, hidden] for micro-batch k. per_block[i][k]: keyword arguments block i
    receives for micro-batch k (attention mask, rotary embeddings, positions). They differ between
    blocks where layer kinds alternate (Gemma-2/3 sliding vs global layers take another mask and,
    in Gemma-3, another rotary table); blocks of one kind share the same tensor objects.
    `index`: the block these inputs enter; `kwargs` is its row of per_block.
    """

    hidden: list[torch.Tensor]
    per_block: list[list[dict]]
    index: int = 0

    @property
    def kwargs(self) -> list[dict]:
        return self.per_block[min(self.index, len(self.per_block) - 1)]

    @property
    def n_samples(self) -> int:
        return sum(h.shape[0] for h in self.hidden)

    def advance(self, hidden: list[torch.Tensor]) -> "BlockInputs":
        """The inputs of the next block: `hidden` (this block's outputs) with that block's kwargs."""
        return BlockInputs(hidden, self.per_block, self.index + 1)

    def at(self, index: int) -> "BlockInputs":
        """The same hidden states entering block `index` (its own kwargs)."""
        return BlockInputs(self.hidden, self.per_block, index)


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def move_shared(obj, device, memo: dict):
    """`obj` (tensors in tuples/dicts) on `device`, each distinct tensor moved once: kwargs shared
    by several blocks stay shared after the move. `memo` maps id(tensor) -> (tensor, moved)."""
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = (obj, obj.to(device))
        return memo[id(obj)][1]
    if isinstance(obj, tuple):
        return tuple(move_shared(o, device, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: move_shared(v, device, memo) for k, v in obj.items()}
    return obj


def _kept_kwargs(kwargs: dict, device, moved: dict) -> dict:
    """Replayable kwargs, moved to `device` once per distinct tensor (blocks of one kind share)."""
    out = {}
    for k, v in kwargs.items():
        if k in _DROP_KWARGS or k == "hidden_states":
            continue
        key = id(v)
        if key not in moved:
            moved[key] = (v, _to(v, device))   # keep v alive so its id is not reused
        out[k] = moved[key][1]
    return out


class _Recorder(nn.Module):
    """Stands in for a block during capture: records its inputs, computes nothing. Attributes the
    model's loop reads off a block (e.g. `attention_type`) come from the block itself."""

    def __init__(self, record, block: nn.Module):
        super().__init__()
        self.__dict__["_record"] = record
        self.__dict__["_block"] = block   # not a submodule: its parameters stay out of this module

    def forward(self, *args, **kwargs):
        return self._record(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_block"], name)


@torch.no_grad()
def capture_block_inputs(model: nn.Module, adapter: FamilyAdapter, input_ids: torch.Tensor,
                         batch_size: int, device: str) -> BlockInputs:
    """Run the model on `input_ids` [n, seq] in micro-batches with every block's forward replaced
    by a pass-through that records what the block receives: block 0's hidden states and each
    block's own kwargs. Costs one embedding lookup per sample; no block computes anything (masks
    and rotary tables do not depend on the hidden states)."""
    blocks = adapter.blocks(model)
    hidden: list[torch.Tensor] = []
    per_block: list[list[dict]] = [[] for _ in blocks]
    moved: dict = {}
    last = len(blocks) - 1

    def recorder(i: int, block: nn.Module):
        def forward(*args, **kwargs):
            states = args[0] if args else kwargs["hidden_states"]
            if len(args) > 1:
                raise TypeError(f"block {i} ({type(block).__name__}) takes {len(args) - 1} positional "
                                f"arguments besides the hidden states; only keyword arguments can be replayed")
            if i == 0:
                hidden.append(states.detach())
            per_block[i].append(_kept_kwargs(kwargs, device, moved))
            if i == last:
                raise _StopForward
            return (states,) if adapter.block_returns_tuple else states
        return forward

    parent_path, _, leaf = adapter.layers.rpartition(".")
    parent = FamilyAdapter._get(model, parent_path)
    # the blocks are swapped for recorders, so no hook of a real block fires (harness.offload
    # would onload each block for nothing)
    setattr(parent, leaf, nn.ModuleList([_Recorder(recorder(i, b), b) for i, b in enumerate(blocks)]))
    try:
        with session(model, adapter.embedding(model)):   # one read of the embedding for all micro-batches
            for start in range(0, input_ids.shape[0], batch_size):
                try:
                    model(input_ids[start:start + batch_size].to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        setattr(parent, leaf, blocks)
    return BlockInputs(hidden, per_block)


@torch.no_grad()
def run_block(block: nn.Module, adapter: FamilyAdapter, inputs: BlockInputs) -> list[torch.Tensor]:
    """Forward one block over every stored micro-batch; returns the outputs per micro-batch."""
    return [adapter.block_output(block(h, **kw)) for h, kw in zip(inputs.hidden, inputs.kwargs)]
