"""Importance of depth units (whole blocks, attention sublayers, MLP sublayers).

A *unit* maps the residual stream x_i (its input) to y_i = x_i + f_i(x_i) (its output). Scores
are "higher = more important": a depth method removes the lowest. Span metrics score each window
of n contiguous units (`SPAN_METRICS`); the method removes the lowest-scoring window.

Pure functions over captured states (tensors [N, seq, hidden]):
  block_influence    1 - mean_t cos(x_t, y_t)                         ShortGPT (Men et al. 2024)
  angular            arccos(cos(x_l, y_{l+n-1}))/pi at the last token   Gromov et al. 2024
  streamline_cosine  1 - mean_t cos(x_l, y_{l+n-1}) over a span          LLM-Streamline (Chen et al. 2024)
  rel_l1 / rel_l2    mean_t ||y_t - x_t||_p / ||x_t||_p                  Siddiqui et al. 2024
Metrics needing the model (UnitProbe): reverse (later = less important; "Reassessing Layer
Pruning", Lu et al. 2024), random (seeded), magnitude (sum |W| of the unit), taylor (sum |W * dL/dW|,
Shortened LLaMA, Kim et al. 2024), ppl_drop (calibration loss with the unit removed, Shortened
LLaMA's PPL criterion), shapley (Monte-Carlo Shapley value of the unit's removal on the loss,
Siddiqui et al. 2024).

Sublayer units ("What Matters in Transformers? Not All Attention is Needed", He et al. 2024;
Zhong et al. on heterogeneous sublayers): attention i maps block input -> block input + attn;
MLP i maps that -> block output. Sublayer units are not contiguous in the residual stream (they
interleave), so span metrics on sublayers score single units (n = 1) and the k lowest go.
"""

from __future__ import annotations

import collections
import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch
from torch import nn

from harness.adapters import FamilyAdapter
from harness.blocks.capture import capture_block_inputs
from harness.offload import session
from harness.registry import Registry

UNITS = ("block", "attn", "mlp")


# -------------------------------------------------------------------------------------------------
# pure functions over states

def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[..., d] x [..., d] -> [...] cosine similarity, in float64 for stable 1 - cos near 0."""
    return torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)


def block_influence(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(1.0 - _cos(x, y).mean())


def angular_distance(x: torch.Tensor, y: torch.Tensor, last_token: bool = True) -> float:
    if last_token:  # Gromov et al. measure the final token's representation
        x, y = x[:, -1], y[:, -1]
    return float((torch.arccos(_cos(x, y).clamp(-1, 1)) / math.pi).mean())


def relative_lp(x: torch.Tensor, y: torch.Tensor, p: int) -> float:
    x, y = x.double(), y.double()
    return float((torch.linalg.vector_norm(y - x, ord=p, dim=-1) / torch.linalg.vector_norm(x, ord=p, dim=-1)).mean())


# -------------------------------------------------------------------------------------------------
# streaming: inputs/outputs of one unit at a time under dense propagation

@torch.no_grad()
def stream_unit_io(model: nn.Module, adapter: FamilyAdapter, input_ids: torch.Tensor, unit: str,
                   batch_size: int = 1, device: str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Run the dense model block by block and yield each unit's (input, output), both
    [N, seq, d] float32 on the host, in unit order. Only the current block is onloaded
    (harness.offload) and only the current unit's states are alive: memory is O(1) in the
    number of blocks, where keeping every unit's states would cost 2 * n_blocks of them."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if unit != "block" and adapter.parallel:
        raise ValueError(f"{adapter.family} runs attention and MLP in parallel: no residual point between "
                         f"them, so sublayer units have no input/output of their own")
    inp = capture_block_inputs(model, adapter, input_ids, batch_size, device)
    cat = lambda hs: torch.cat([h.float().cpu() for h in hs])  # noqa: E731
    states = inp.hidden
    for i, block in enumerate(adapter.blocks(model)):
        mlp_in: list[torch.Tensor] = []
        # the residual stream between attention and MLP is what the MLP's norm reads (after any
        # post-attention norm, as in Gemma); parallel blocks have no such point
        # (OLMo-2 has no norm in front of the MLP: the MLP reads the residual itself)
        handle = FamilyAdapter._get(block, adapter.mlp_norm or adapter.mlp).register_forward_hook(
            lambda _m, args, kwargs, _out: mlp_in.append(args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True)
        try:
            with session(model, block):
                new = [adapter.block_output(block(h, **kw)) for h, kw in zip(states, inp.at(i).kwargs)]
        finally:
            handle.remove()
        x = cat(states)
        if unit == "block":
            yield x, cat(new)
        else:
            mid = cat(mlp_in)   # residual stream between attention and MLP
            yield (x, mid) if unit == "attn" else (mid, cat(new))
        states = new


# -------------------------------------------------------------------------------------------------
# temporary removal (for loss-based metrics) and unit parameters

@contextlib.contextmanager
def units_removed(model: nn.Module, adapter: FamilyAdapter, unit: str, indices):
    """Within the context the model behaves as if units `indices` were removed (no weights copied)."""
    from harness.surgery import PassthroughAttention, PassthroughMLP

    indices = sorted(set(int(i) for i in indices))
    blocks = adapter.blocks(model)
    restore: list[tuple[nn.Module, str, nn.Module]] = []
    if unit == "block":
        parent_path, _, leaf = adapter.layers.rpartition(".")
        parent = FamilyAdapter._get(model, parent_path)
        from harness.surgery import per_layer_config

        kept = [i for i in range(len(blocks)) if i not in indices]
        saved = {"num_hidden_layers": model.config.num_hidden_layers, **per_layer_config(model.config, len(blocks))}
        setattr(parent, leaf, nn.ModuleList([blocks[i] for i in kept]))
        model.config.num_hidden_layers = len(kept)
        for key, value in saved.items():   # layer_types etc. follow the kept blocks
            if isinstance(value, list):
                setattr(model.config, key, [value[i] for i in kept])
        try:
            yield
        finally:
            setattr(parent, leaf, blocks)
            for key, value in saved.items():
                setattr(model.config, key, value)
        return
    for i in indices:
        blk = blocks[i]
        sub, norm = (adapter.attn, adapter.attn_norm) if unit == "attn" else (adapter.mlp, adapter.mlp_norm)
        new = PassthroughAttention(i) if unit == "attn" else PassthroughMLP()
        for path, mod in ((sub, new), (norm, nn.Identity())):
            parent_path, _, leaf = path.rpartition(".")
            parent = FamilyAdapter._get(blk, parent_path)
            restore.append((parent, leaf, getattr(parent, leaf)))
            setattr(parent, leaf, mod)
    try:
        yield
    finally:
        for parent, leaf, mod in reversed(restore):
            setattr(parent, leaf, mod)


def unit_parameters(model: nn.Module, adapter: FamilyAdapter, unit: str, index: int) -> dict[str, nn.Parameter]:
    """{full parameter name: parameter} of one unit (the sublayer plus the norm feeding it)."""
    prefix = adapter.block_prefix(index)
    blk = adapter.blocks(model)[index]
    if unit == "block":
        subs = [("", blk)]
    elif unit == "attn":
        subs = [(adapter.attn, adapter.attention(blk)), (adapter.attn_norm, FamilyAdapter._get(blk, adapter.attn_norm))]
    else:
        subs = [(adapter.mlp, adapter.mlp_module(blk)), (adapter.mlp_norm, FamilyAdapter._get(blk, adapter.mlp_norm))]
    out = {}
    for path, mod in subs:
        for name, p in mod.named_parameters():
            out[".".join(filter(None, (prefix, path, name)))] = p
    return out


# -------------------------------------------------------------------------------------------------
# the probe: lazily computed evidence shared by the metrics

@dataclass
class UnitProbe:
    model: nn.Module
    adapter: FamilyAdapter
    unit: str
    input_ids: torch.Tensor          # [N, seq] calibration tokens (None for data-free metrics)
    batch_size: int = 1
    device: str = "cpu"
    seed: int = 0
    shapley_rounds: int = 2

    @property
    def n_units(self) -> int:
        return len(self.adapter.blocks(self.model))

    def unit_io(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input, output) per unit, streamed (stream_unit_io)."""
        return stream_unit_io(self.model, self.adapter, self.input_ids, self.unit, self.batch_size, self.device)

    @torch.no_grad()
    def loss(self, removed=()) -> float:
        """Mean calibration LM loss with units `removed` taken out."""
        with units_removed(self.model, self.adapter, self.unit, removed):
            total = 0.0
            for start in range(0, self.input_ids.shape[0], self.batch_size):
                ids = self.input_ids[start:start + self.batch_size].to(self.device)
                total += float(self.model(ids, labels=ids, use_cache=False).loss) * ids.shape[0]
        return total / self.input_ids.shape[0]

    def params(self, index: int) -> dict[str, nn.Parameter]:
        return unit_parameters(self.model, self.adapter, self.unit, index)


# -------------------------------------------------------------------------------------------------
# metrics: probe -> scores (per unit, or per window of n units for span metrics)

def _pairwise(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> Callable:
    def metric(probe: UnitProbe, n: int = 1) -> torch.Tensor:
        return torch.tensor([fn(x, y) for x, y in probe.unit_io()], dtype=torch.float64)
    return metric


def _span(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> Callable:
    """Window l of n contiguous blocks scores fn(input of block l, output of block l+n-1); the
    inputs of the n-1 windows still open are the only states kept (sublayers: n = 1)."""
    def metric(probe: UnitProbe, n: int = 1) -> torch.Tensor:
        n = n if probe.unit == "block" else 1
        pending: collections.deque[torch.Tensor] = collections.deque()
        scores = []
        for x, y in probe.unit_io():
            pending.append(x)
            if len(pending) == n:
                scores.append(fn(pending.popleft(), y))
        return torch.tensor(scores, dtype=torch.float64)
    return metric


def reverse_order(probe: UnitProbe, n: int = 1) -> torch.Tensor:
    return -torch.arange(probe.n_units, dtype=torch.float64)  # the last unit goes first


def random_order(probe: UnitProbe, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(probe.seed)
    return torch.rand(probe.n_units, generator=g, dtype=torch.float64)


def magnitude(probe: UnitProbe, n: int = 1) -> torch.Tensor:
    blocks = probe.adapter.blocks(probe.model)
    scores = []
    for i in range(probe.n_units):
        with session(probe.model, blocks[i]):   # the unit's weights, onloaded for the sum
            scores.append(sum(float(p.detach().abs().sum()) for p in probe.params(i).values()))
    return torch.tensor(scores, dtype=torch.float64)


def taylor(probe: UnitProbe, n: int = 1) -> torch.Tensor:
    from harness.blocks.gradients import calibration_gradients

    grads, _ = calibration_gradients(probe.model, probe.input_ids, probe.batch_size, probe.device)
    return torch.tensor([sum(float((p.detach().float() * grads[name]).abs().sum())
                             for name, p in probe.params(i).items())
                         for i in range(probe.n_units)], dtype=torch.float64)


def ppl_drop(probe: UnitProbe, n: int = 1) -> torch.Tensor:
    return torch.tensor([probe.loss([i]) for i in range(probe.n_units)], dtype=torch.float64)


def shapley(probe: UnitProbe, n: int = 1) -> torch.Tensor:
    """Monte-Carlo Shapley value of removing each unit, v(S) = calibration loss with S removed.
    Each round draws a random permutation, cuts it into chunks of max(n, 1) units and walks each
    chunk from the full model, so every unit gets one marginal per round against a random
    coalition of size < n (the removal sizes that matter for a budget of n). Cost: rounds * U
    forwards over the calibration set."""
    g = torch.Generator().manual_seed(probe.seed)
    U, chunk = probe.n_units, max(int(n), 1)
    base = probe.loss([])
    total = torch.zeros(U, dtype=torch.float64)
    for _ in range(probe.shapley_rounds):
        perm = torch.randperm(U, generator=g).tolist()
        for c in range(0, U, chunk):
            removed, prev = [], base
            for i in perm[c:c + chunk]:
                removed.append(i)
                cur = probe.loss(removed)
                total[i] += cur - prev
                prev = cur
    return total / probe.shapley_rounds


class Metric(NamedTuple):
    score: Callable[[UnitProbe, int], torch.Tensor]
    needs_calibration: bool
    span: bool            # scores windows of n contiguous units (see select_units)


# name (a depth method's `metric`) -> Metric
METRICS: Registry = Registry("depth metric", {
    "block_influence": Metric(_pairwise(block_influence), True, False),
    "angular": Metric(_span(angular_distance), True, True),
    "streamline_cosine": Metric(_span(lambda x, y: float(1.0 - _cos(x, y).mean())), True, True),
    "rel_l1": Metric(_pairwise(lambda x, y: relative_lp(x, y, 1)), True, False),
    "rel_l2": Metric(_pairwise(lambda x, y: relative_lp(x, y, 2)), True, False),
    "reverse": Metric(reverse_order, False, False),
    "random": Metric(random_order, False, False),
    "magnitude": Metric(magnitude, False, False),
    "taylor": Metric(taylor, True, False),
    "ppl_drop": Metric(ppl_drop, True, False),
    "shapley": Metric(shapley, True, False),
})


def select_units(scores: torch.Tensor, k: int, span: bool) -> list[int]:
    """The k units to remove: the lowest-scoring window of k (span metrics; scores per window
    start) or the k lowest scores (ties -> lower index first, deterministic)."""
    if span:
        start = int(torch.argmin(scores))
        return list(range(start, start + k))
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:k])
