"""Capture the inputs of decoder block 0 and run single blocks on stored hidden states."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.offload import session


class _StopForward(Exception):
    """Raised by the capture hook: nothing after block 0's input is needed."""


# Keyword arguments a block receives that must not be replayed (we never build a KV cache here).
_DROP_KWARGS = ("past_key_values", "past_key_value", "use_cache", "output_attentions")


@dataclass
class BlockInputs:
    """Hidden states entering the current block, stored per micro-batch.

    hidden[k]: [b_k, seq, hidden] for micro-batch k; kwargs[k]: what the model passes to every
    block for that micro-batch (rotary embeddings, masks, positions), identical for all blocks.
    """

    hidden: list[torch.Tensor]
    kwargs: list[dict]

    @property
    def n_samples(self) -> int:
        return sum(h.shape[0] for h in self.hidden)

    def replace(self, hidden: list[torch.Tensor]) -> "BlockInputs":
        return BlockInputs(hidden, self.kwargs)


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    return obj


@torch.no_grad()
def capture_block_inputs(model: nn.Module, adapter: FamilyAdapter, input_ids: torch.Tensor,
                         batch_size: int, device: str) -> BlockInputs:
    """Run the embedding part of the model on `input_ids` [n, seq] in micro-batches and keep what
    block 0 receives. Costs one embedding lookup per sample; no block is executed."""
    block0 = adapter.blocks(model)[0]
    hidden: list[torch.Tensor] = []
    kwargs_list: list[dict] = []

    def hook(_module, args, kwargs):
        states = args[0] if args else kwargs["hidden_states"]
        hidden.append(states.detach())
        kept = {k: v for k, v in kwargs.items() if k not in _DROP_KWARGS and k != "hidden_states"}
        kwargs_list.append({k: _to(v, device) for k, v in kept.items()})
        raise _StopForward

    # prepend: fire before harness.offload's onload hook, so block 0 is not read for nothing
    handle = block0.register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
    try:
        with session(model, adapter.embedding(model)):   # one read of the embedding for all micro-batches
            for start in range(0, input_ids.shape[0], batch_size):
                try:
                    model(input_ids[start:start + batch_size].to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    return BlockInputs(hidden, kwargs_list)


@torch.no_grad()
def run_block(block: nn.Module, adapter: FamilyAdapter, inputs: BlockInputs) -> list[torch.Tensor]:
    """Forward one block over every stored micro-batch; returns the outputs per micro-batch."""
    return [adapter.block_output(block(h, **kw)) for h, kw in zip(inputs.hidden, inputs.kwargs)]
