"""Structural surgery shared by every structured method: the model really gets smaller.

LLaMA layout only (RMSNorm, GQA attention, gated MLP; `adapter.supports_surgery`). Every function
edits the model in place and keeps the HF config consistent, so a model pruned with uniform widths
is an ordinary, isomorphic model: `save_pretrained` / `from_pretrained` just work.

drop_blocks        remove decoder blocks; re-index attention `layer_idx`, `num_hidden_layers`,
                   per-layer config lists (`layer_types`).
drop_sublayer      remove a block's attention or MLP (and the norm that only feeds it); the
                   residual passes through. LLaMA has no config field for a missing sublayer, so
                   the dropped sublayers are listed under config key `prunebench_dropped_sublayers`
                   and `load_pruned(path)` (= from_pretrained + re-applying that list) restores the
                   model; plain `from_pretrained` would re-create the dropped sublayers randomly.
prune_mlp_channels keep MLP channels: gate/up rows and down columns.
prune_heads        keep KV groups and, inside each kept group, the same number of query heads
                   (GQA stays valid: query heads always move with their KV group).
prune_hidden       keep residual-stream (embedding) channels across the whole model (Minitron).
                   RMSNorm averages over the channels it sees, so with fewer channels every norm
                   weight is scaled by sqrt(d/d') and eps by d/d': the pruned model then computes
                   exactly what the model with those channels zeroed computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from harness.adapters import FamilyAdapter

DROPPED_KEY = "prunebench_dropped_sublayers"   # config: {"attn": [block, ...], "mlp": [block, ...]}
SUBLAYERS = ("attn", "mlp")


class SurgeryError(ValueError):
    pass


# -------------------------------------------------------------------------------------------------
# pass-through modules standing in for a dropped sublayer (no parameters)

class PassthroughAttention(nn.Module):
    """A dropped attention sublayer: adds nothing to the residual stream.

    transformers reads the cached sequence length from layer 0's KV cache (and masks from each
    layer's), so with a cache this writes a [b, 1, seq, 1] placeholder: one float per token instead
    of 2 * kv_heads * head_dim, and generation positions stay right whichever layer lost attention.
    """

    def __init__(self, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                past_key_values=None, **kwargs):
        if past_key_values is not None:
            b, s, _ = hidden_states.shape
            placeholder = hidden_states.new_zeros(b, 1, s, 1)
            past_key_values.update(placeholder, placeholder, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class PassthroughMLP(nn.Module):
    """A dropped MLP sublayer: adds nothing to the residual stream."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def _require(adapter: FamilyAdapter) -> None:
    if not adapter.supports_surgery:
        raise SurgeryError(f"width surgery does not apply to family {adapter.family!r}: {adapter.width_blocker}")


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(FamilyAdapter._get(root, parent), leaf, module)


def _new_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.data                                   # [out, in]
    b = lin.bias.data if lin.bias is not None else None   # [out]
    if rows is not None:
        w = w.index_select(0, rows)
        b = b.index_select(0, rows) if b is not None else None
    if cols is not None:
        w = w.index_select(1, cols)
    return _new_linear(w.contiguous(), b)


def _index(keep: Sequence[int] | torch.Tensor, size: int, what: str) -> torch.Tensor:
    idx = torch.as_tensor(list(keep) if not isinstance(keep, torch.Tensor) else keep, dtype=torch.long)
    idx = torch.sort(idx).values  # keep the original order of what survives
    if idx.numel() == 0:
        raise SurgeryError(f"cannot keep zero {what}")
    if idx.numel() != torch.unique(idx).numel() or idx.min() < 0 or idx.max() >= size:
        raise SurgeryError(f"bad {what} indices (size {size}): {idx.tolist()}")
    return idx


def dropped_sublayers(config) -> dict[str, list[int]]:
    got = getattr(config, DROPPED_KEY, None) or {}
    return {k: sorted(int(i) for i in got.get(k, [])) for k in SUBLAYERS}


# -------------------------------------------------------------------------------------------------
# depth

def per_layer_config(config, n: int) -> dict[str, list]:
    """Config entries holding one value per layer (`layer_types`, ...): top-level lists of length
    n whose key names layers."""
    return {k: list(v) for k, v in vars(config).items()
            if "layer" in k and isinstance(v, (list, tuple)) and len(v) == n}


def _renumber_layer_sets(cfg, n: int, kept: list[int]) -> None:
    """Config entries naming layers by index follow the kept blocks. MoE configs choose dense
    layers by index (`mlp_only_layers`) and by stride (`decoder_sparse_step`: layer i is MoE when
    (i + 1) % step == 0); after a drop the stride no longer describes the kept layers, so the dense
    ones are listed explicitly and the stride set to 1."""
    remap = {o: k for k, o in enumerate(kept)}
    step = getattr(cfg, "decoder_sparse_step", None)
    only = getattr(cfg, "mlp_only_layers", None)
    if step is None and only is None:
        return
    step = step or 1
    only = set(only or [])
    dense = [i for i in range(n) if i in only or (i + 1) % step != 0]
    cfg.mlp_only_layers = [remap[i] for i in dense if i in remap]
    if hasattr(cfg, "decoder_sparse_step"):
        cfg.decoder_sparse_step = 1


def drop_blocks(model: nn.Module, adapter: FamilyAdapter, indices: Iterable[int]) -> list[int]:
    """Remove decoder blocks `indices`; returns the kept original indices. Works for every layout:
    only the block list, each block's KV-cache slot and the per-layer config entries change."""
    layers = adapter.blocks(model)
    n = len(layers)
    drop = sorted(set(int(i) for i in indices))
    if any(i < 0 or i >= n for i in drop):
        raise SurgeryError(f"block indices out of range 0..{n - 1}: {drop}")
    if len(drop) >= n:
        raise SurgeryError("cannot drop every block")
    kept = [i for i in range(n) if i not in drop]
    new = nn.ModuleList([layers[i] for i in kept])
    for new_idx, block in enumerate(new):
        for mod in block.modules():   # every module that knows its KV-cache slot (block, attention)
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = new_idx
    _set(model, adapter.layers, new)
    cfg = model.config
    for key, value in per_layer_config(cfg, n).items():   # per-layer lists follow the blocks
        setattr(cfg, key, [value[i] for i in kept])
    _renumber_layer_sets(cfg, n, kept)
    cfg.num_hidden_layers = len(kept)
    old = dropped_sublayers(cfg)
    if any(old.values()):
        remap = {o: k for k, o in enumerate(kept)}
        setattr(cfg, DROPPED_KEY, {s: [remap[i] for i in old[s] if i in remap] for s in SUBLAYERS})
    return kept


def insert_block(model: nn.Module, adapter: FamilyAdapter, position: int, block: nn.Module,
                 layer_config: dict) -> None:
    """Insert decoder `block` at `position` of the block list (LLM-Streamline's replacement layer
    where its span was): every block's KV-cache slot and the per-layer config lists follow, and
    `layer_config` gives the new block's entry of each per-layer list (its source block's)."""
    layers = list(adapter.blocks(model))
    n = len(layers)
    cfg = model.config
    if not 0 <= position <= n:
        raise SurgeryError(f"insert position {position} out of range 0..{n}")
    if getattr(cfg, "mlp_only_layers", None) or (getattr(cfg, "decoder_sparse_step", None) or 1) != 1 \
            or any(dropped_sublayers(cfg).values()):
        raise SurgeryError("cannot insert a block into a config that names layers by index (MoE dense-layer "
                           "lists, dropped sublayers)")
    per = per_layer_config(cfg, n)
    if set(per) - set(layer_config):
        raise SurgeryError(f"the inserted block needs its entries of {sorted(set(per) - set(layer_config))}")
    new = nn.ModuleList(layers[:position] + [block] + layers[position:])
    for new_idx, blk in enumerate(new):
        for mod in blk.modules():
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = new_idx
    _set(model, adapter.layers, new)
    for key, values in per.items():
        setattr(cfg, key, values[:position] + [layer_config[key]] + values[position:])
    cfg.num_hidden_layers = n + 1


def _replace_sublayer(block: nn.Module, adapter: FamilyAdapter, sublayer: str) -> None:
    if sublayer == "attn":
        layer_idx = getattr(adapter.attention(block), "layer_idx", 0)
        _set(block, adapter.attn, PassthroughAttention(layer_idx))
        if adapter.attn_norm != adapter.mlp_norm:
            _set(block, adapter.attn_norm, nn.Identity())  # fed only the dropped attention
    elif sublayer == "mlp":
        _set(block, adapter.mlp, PassthroughMLP())
        if adapter.attn_norm != adapter.mlp_norm:
            _set(block, adapter.mlp_norm, nn.Identity())
    else:
        raise SurgeryError(f"sublayer must be one of {SUBLAYERS}, got {sublayer!r}")


def drop_sublayer(model: nn.Module, adapter: FamilyAdapter, block_idx: int, sublayer: str) -> None:
    """Remove the attention or MLP of block `block_idx` (and the norm in front of it)."""
    if adapter.parallel:
        raise SurgeryError(f"{adapter.family} runs attention and MLP in parallel; sublayers are not separable")
    if sublayer not in SUBLAYERS:
        raise SurgeryError(f"sublayer must be one of {SUBLAYERS}, got {sublayer!r}")
    block = adapter.blocks(model)[block_idx]
    already = dropped_sublayers(model.config)
    if block_idx in already[sublayer]:
        raise SurgeryError(f"{sublayer} of block {block_idx} is already dropped")
    _replace_sublayer(block, adapter, sublayer)
    already[sublayer] = sorted(already[sublayer] + [int(block_idx)])
    setattr(model.config, DROPPED_KEY, already)


def apply_dropped_sublayers(model: nn.Module, adapter: FamilyAdapter | None = None) -> nn.Module:
    """Re-create the pass-through sublayers a config lists (after from_pretrained)."""
    from harness.adapters import adapter_for

    adapter = adapter or adapter_for(model)
    for sublayer, idxs in dropped_sublayers(model.config).items():
        for i in idxs:
            _replace_sublayer(adapter.blocks(model)[i], adapter, sublayer)
    return model


def load_pruned(path: str | Path, **kwargs) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained(path)` for any model pruned here. Models pruned only in
    depth or width load the same with plain from_pretrained; dropped sublayers need this helper."""
    import logging

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    kwargs.setdefault("dtype", torch.float32)
    level = hf_logging.get_verbosity()
    cfg_path = Path(path) / "config.json"
    has_dropped = cfg_path.is_file() and DROPPED_KEY in cfg_path.read_text()
    if has_dropped:  # the dropped sublayers' weights are absent on purpose; don't warn about them
        hf_logging.set_verbosity(logging.ERROR)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    from harness.quant import apply_saved_quant

    return apply_saved_quant(apply_dropped_sublayers(model))   # quantised activations are hooks, not weights


# -------------------------------------------------------------------------------------------------
# coupled groups: what width pruning removes together

@dataclass(frozen=True)
class Member:
    """One tensor of a coupled group: the module at `path` (under the group's root: a block, or the
    model for hidden channels) and the weight dimension the group's index runs along (0: rows of a
    linear / entries of a norm, 1: columns)."""
    path: str
    dim: int
    kind: str = "linear"        # linear | norm | embedding | head


def block_group(adapter: FamilyAdapter, axis: str) -> tuple[Member, ...]:
    """The linears of a block whose rows/columns i form one prunable unit, as Torch-Pruning's Group:
      heads  query-head channels: q_proj rows, o_proj columns
      kv     KV-head channels: k_proj and v_proj rows
      mlp    MLP channels: rows of the MLP input linears (gate/up), columns of the output (down)
    Scoring (LLM-Pruner) sums importance over these members; prune_heads / prune_mlp_channels slice
    exactly these, so what is scored is what is removed."""
    if axis == "heads":
        return (Member(f"{adapter.attn}.{adapter.attn_inputs[0]}", 0), Member(f"{adapter.attn}.{adapter.attn_output}", 1))
    if axis == "kv":
        return tuple(Member(f"{adapter.attn}.{n}", 0) for n in adapter.attn_inputs[1:3])
    if axis == "mlp":
        return (*(Member(f"{adapter.mlp}.{n}", 0) for n in adapter.mlp_inputs),
                Member(f"{adapter.mlp}.{adapter.mlp_output}", 1))
    raise ValueError(f"block group axis must be heads, kv or mlp, got {axis!r}")


def hidden_group(model: nn.Module, adapter: FamilyAdapter) -> tuple[Member, ...]:
    """Residual-stream channel i everywhere (paths under the model), block by block: the block's
    linears (columns of those reading the stream, rows of those writing it) and its stream norms;
    then the final norm, the embedding's columns and, when not tied to it, the LM head's columns.
    LLM-Pruner's channel mode scores these members; prune_hidden slices them."""
    d = adapter.embedding(model).weight.shape[1]
    out = []
    for i, block in enumerate(adapter.blocks(model)):
        prefix = adapter.block_prefix(i)
        out += [Member(f"{prefix}.{n}", 1 if adapter.reads_stream(n) else 0) for n in adapter.linears(block)]
        out += [Member(f"{prefix}.{n}", 0, "norm") for n, mod in block.named_modules() if _is_stream_norm(mod, d)]
    out += [Member(f"{adapter.final_norm}.{n}".rstrip("."), 0, "norm")
            for n, mod in FamilyAdapter._get(model, adapter.final_norm).named_modules() if _is_stream_norm(mod, d)]
    out.append(Member(adapter.embed, 1, "embedding"))
    if adapter.head(model).weight is not adapter.embedding(model).weight:
        out.append(Member(adapter.lm_head, 1, "head"))
    return tuple(out)


def _slice_along(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    return _slice_linear(lin, rows=idx) if dim == 0 else _slice_linear(lin, cols=idx)


# -------------------------------------------------------------------------------------------------
# width

def prune_mlp_channels(block: nn.Module, adapter: FamilyAdapter, keep_idx) -> None:
    """Keep MLP channels `keep_idx` in every member of the block's MLP group (block_group "mlp")."""
    _require(adapter)
    mlp = adapter.mlp_module(block)
    first = getattr(mlp, adapter.mlp_inputs[0])
    idx = _index(keep_idx, first.out_features, "MLP channels").to(first.weight.device)
    for m in block_group(adapter, "mlp"):
        _set(block, m.path, _slice_along(FamilyAdapter._get(block, m.path), idx, m.dim))
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = idx.numel()


def head_layout(config) -> tuple[int, int, int]:
    """(num_attention_heads, num_key_value_heads, head_dim) of a LLaMA-like config."""
    n_q = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_q
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_q
    return n_q, n_kv, head_dim


def prune_heads(block: nn.Module, adapter: FamilyAdapter, head_dim: int, n_kv: int,
                keep_kv: Sequence[int], keep_q: Sequence[Sequence[int]]) -> None:
    """Keep KV groups `keep_kv` and, in kept group j, query heads `keep_q[j]` (indices within the
    group, 0..group_size-1; the same count in every group so GQA stays valid).

    Query head h belongs to KV group h // group_size (transformers' repeat_kv layout)."""
    _require(adapter)
    attn = adapter.attention(block)
    q, k = (getattr(attn, n) for n in adapter.attn_inputs[:2])
    n_q = q.out_features // head_dim
    group = n_q // n_kv
    if n_q % n_kv or k.out_features != n_kv * head_dim:
        raise SurgeryError(f"attention shapes do not match n_kv={n_kv}, head_dim={head_dim}")
    kv = _index(keep_kv, n_kv, "KV groups").tolist()
    if len(keep_q) != len(kv):
        raise SurgeryError("keep_q needs one list of query heads per kept KV group")
    per_group = {len(set(g)) for g in keep_q}
    if len(per_group) != 1:
        raise SurgeryError("every kept KV group must keep the same number of query heads")
    q_heads = [j * group + int(h) for j, hs in zip(kv, keep_q) for h in _index(hs, group, "query heads").tolist()]

    def channels(heads):  # head indices -> [heads * head_dim] row/column indices
        return torch.tensor([h * head_dim + c for h in heads for c in range(head_dim)], dtype=torch.long,
                            device=q.weight.device)

    for axis, idx in (("heads", channels(q_heads)), ("kv", channels(kv))):
        for m in block_group(adapter, axis):
            _set(block, m.path, _slice_along(FamilyAdapter._get(block, m.path), idx, m.dim))
    attn.head_dim = head_dim
    attn.num_key_value_groups = len(q_heads) // len(kv)
    for name, value in (("num_heads", len(q_heads)), ("num_key_value_heads", len(kv))):
        if hasattr(attn, name):
            setattr(attn, name, value)


def set_head_config(config, n_q: int, n_kv: int, head_dim: int) -> None:
    """Uniform head counts after prune_heads on every block (head_dim stays explicit: it no longer
    equals hidden_size // num_attention_heads)."""
    _check_loadable(config.hidden_size, n_q)
    config.head_dim = head_dim
    config.num_attention_heads = n_q
    config.num_key_value_heads = n_kv


def _stream_norms(model: nn.Module, adapter: FamilyAdapter) -> list[nn.Module]:
    """The norms of the hidden-channel group: the final norm and, in each block, the norms in front
    of and behind the sublayers (Gemma's pre/post feed-forward norms, OLMo-2's output norms)."""
    return [FamilyAdapter._get(model, m.path) for m in hidden_group(model, adapter) if m.kind == "norm"]


def _is_stream_norm(mod: nn.Module, d: int) -> bool:
    """A norm over the residual stream's d channels; per-head q/k norms (Qwen3, Gemma-3) span
    head_dim channels and are not."""
    w = getattr(mod, "weight", None)
    return _is_norm_module(mod) and isinstance(w, torch.Tensor) and w.dim() == 1 and w.numel() == d


def _is_norm_module(mod: nn.Module) -> bool:
    return isinstance(mod, nn.LayerNorm) or "norm" in type(mod).__name__.lower()


def norm_kind(norm: nn.Module) -> str:
    """How a stream norm uses its weight, probed on random inputs: "rms" (w * x / rms(x)),
    "rms_offset" (Gemma: (1 + w) * x / rms(x)), or "centered" (LayerNorm: subtracts the mean, for
    which dropping channels changes the statistics and no rescaling restores them)."""
    w = norm.weight
    d = w.numel()
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(0)).to(w)
    with torch.no_grad():
        if torch.allclose(norm(x + 1.0), norm(x), atol=1e-4):   # blind to a shift: subtracts the mean
            return "centered"
        saved = w.data.clone()
        w.data.zero_()
        zero_out = norm(x)
        w.data.copy_(saved)
    return "rms" if zero_out.abs().max() < 1e-6 else "rms_offset"


def _check_loadable(hidden: int, n_q: int) -> None:
    # transformers' LlamaConfig validation rejects this on from_pretrained, even with explicit head_dim
    if hidden % n_q:
        raise SurgeryError(f"hidden_size {hidden} must stay a multiple of num_attention_heads {n_q}, "
                           f"or from_pretrained refuses the config")


def hidden_blocker(model: nn.Module, adapter: FamilyAdapter) -> str:
    """Why hidden-channel pruning cannot apply ("" when it can): checked before any surgery."""
    if not adapter.supports_surgery:
        return adapter.width_blocker
    if any(norm_kind(n) == "centered" for n in _stream_norms(model, adapter)):
        return (f"hidden-channel pruning needs RMS norms; family {adapter.family!r} has mean-centred "
                f"LayerNorms, whose statistics change when channels are removed")
    return ""


def prune_hidden(model: nn.Module, adapter: FamilyAdapter, keep_idx) -> None:
    """Keep residual-stream channels `keep_idx` everywhere: embedding columns, every linear reading
    the stream (columns) or writing it (rows), every stream norm, lm_head columns (tied or not).

    RMS norms average over the channels they see; with fewer channels each norm's effective scale
    is multiplied by sqrt(d/d') and eps by d/d', so the pruned model computes exactly what the model
    with those channels zeroed computes (Gemma's (1 + w) norms: 1 + w' = (1 + w) * sqrt(d/d')).
    An embedding scaled by sqrt(hidden_size) (Gemma) is rescaled on reload from the new width; the
    embedding rows absorb the change, and the final norm the inverse where the head is tied.
    Mean-centred LayerNorms (OPT, GPT-NeoX, Falcon, Cohere) have no such rescaling: refused."""
    _require(adapter)
    emb = adapter.embedding(model)
    d = emb.weight.shape[1]
    idx = _index(keep_idx, d, "hidden channels").to(emb.weight.device)   # [d'] kept channels
    d_new = idx.numel()
    _check_loadable(d_new, model.config.num_attention_heads)
    group = hidden_group(model, adapter)
    norms = [FamilyAdapter._get(model, m.path) for m in group if m.kind == "norm"]
    kinds = {id(n): norm_kind(n) for n in norms}
    if "centered" in kinds.values():
        raise SurgeryError(f"hidden-channel pruning needs RMS norms; family {adapter.family!r} has "
                           f"mean-centred LayerNorms, whose statistics change when channels are removed")
    head = adapter.head(model)
    tied = head.weight is emb.weight      # read before the embedding is replaced
    emb_fix = _embedding_fix(emb, d, d_new)
    final = FamilyAdapter._get(model, adapter.final_norm)
    with torch.no_grad():
        _slice_embedding(emb, idx, emb_fix)
        for m in group:
            if m.kind == "linear":
                _set(model, m.path, _slice_along(FamilyAdapter._get(model, m.path), idx, m.dim))
        for block in adapter.blocks(model):
            if hasattr(block, "hidden_size"):
                block.hidden_size = d_new
        for norm in norms:
            # a tied head reads the final norm's output through the rescaled embedding: undo that there
            s_norm = math.sqrt(d / d_new) / emb_fix if (norm is final and tied) else math.sqrt(d / d_new)
            _slice_stream_norm(norm, idx, s_norm, kinds[id(norm)] == "rms_offset", d)
        # per-head norms read rms_norm_eps from the config too: keep the live model equal to a reload
        for block in adapter.blocks(model):
            for mod in adapter.attention(block).modules():
                if _is_norm_module(mod) and mod not in norms:
                    _scale_eps(mod, d, d_new)
        _slice_head(model, adapter, head, emb, tied, idx)
    cfg = model.config
    if getattr(cfg, "head_dim", None) is None:
        cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    cfg.rms_norm_eps = cfg.rms_norm_eps * d / d_new
    cfg.hidden_size = d_new


def _embedding_fix(emb: nn.Module, d: int, d_new: int) -> float:
    """Factor on the kept embedding columns: Gemma multiplies embeddings by sqrt(hidden_size), which a
    reload recomputes from the new width, so the rows absorb sqrt(d / d'); 1.0 for other families."""
    embed_scale = getattr(emb, "embed_scale", None)
    if isinstance(embed_scale, torch.Tensor) and math.isclose(float(embed_scale), math.sqrt(d), rel_tol=1e-4):
        return math.sqrt(d) / math.sqrt(d_new)
    return 1.0


def _slice_embedding(emb: nn.Module, idx: torch.Tensor, emb_fix: float) -> None:
    """Keep embedding columns `idx` ([vocab, d] -> [vocab, d']), scaled by emb_fix (Gemma)."""
    d_new = idx.numel()
    emb.weight = nn.Parameter(emb.weight.data.index_select(1, idx).contiguous() * emb_fix)
    emb.embedding_dim = d_new
    if emb_fix != 1.0:
        emb.embed_scale.fill_(math.sqrt(d_new))
        if hasattr(emb, "scalar_embed_scale"):
            emb.scalar_embed_scale = math.sqrt(d_new)


def _slice_stream_norm(norm: nn.Module, idx: torch.Tensor, s_norm: float, offset: bool, d: int) -> None:
    """Keep a stream norm's channels `idx` ([d] -> [d']) with its weight scaled so that it computes
    what it computed with the other channels zeroed (offset: Gemma's (1 + w) weight)."""
    w = norm.weight.data.index_select(0, idx)
    w = (1.0 + w) * s_norm - 1.0 if offset else w * s_norm
    norm.weight = nn.Parameter(w)
    _scale_eps(norm, d, idx.numel())


def _scale_eps(norm: nn.Module, d: int, d_new: int) -> None:
    """eps scales with d / d': the mean of squares is over fewer channels."""
    for attr in ("variance_epsilon", "eps"):
        if isinstance(getattr(norm, attr, None), float):
            setattr(norm, attr, getattr(norm, attr) * d / d_new)


def _slice_head(model: nn.Module, adapter: FamilyAdapter, head: nn.Linear, emb: nn.Module, tied: bool,
                idx: torch.Tensor) -> None:
    """lm_head [vocab, d] -> [vocab, d']: a tied head shares the already sliced embedding weight."""
    if tied:
        new_head = nn.Linear(idx.numel(), head.out_features, bias=head.bias is not None,
                             device=emb.weight.device, dtype=emb.weight.dtype)
        new_head.weight = emb.weight
        if head.bias is not None:
            new_head.bias = head.bias
        _set(model, adapter.lm_head, new_head)
    else:
        _set(model, adapter.lm_head, _slice_linear(head, cols=idx))


# -------------------------------------------------------------------------------------------------
# exact parameter counts of a LLaMA-like layout (width planning; tests check them against reality)

# families whose q/k/v projections always carry a bias (no config flag says so)
QKV_BIAS_MODEL_TYPES = frozenset({"qwen2"})


def llama_param_count(config, *, hidden: int | None = None, intermediate: int | None = None,
                      n_q: int | None = None, n_kv: int | None = None) -> int:
    """Parameters of the LLaMA-like model `config` describes, optionally with other widths."""
    q0, kv0, hd = head_layout(config)
    d = hidden or config.hidden_size
    f = intermediate or config.intermediate_size
    nq, nkv = n_q or q0, n_kv or kv0
    L = config.num_hidden_layers
    V = config.vocab_size
    attn = d * nq * hd + 2 * d * nkv * hd + nq * hd * d
    if getattr(config, "attention_bias", False):
        attn += nq * hd + 2 * nkv * hd + d
    elif getattr(config, "model_type", None) in QKV_BIAS_MODEL_TYPES:
        attn += nq * hd + 2 * nkv * hd          # q/k/v carry biases, o_proj none
    mlp = 3 * d * f + ((2 * f + d) if getattr(config, "mlp_bias", False) else 0)
    emb = V * d * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return emb + d + L * (attn + mlp + 2 * d)
