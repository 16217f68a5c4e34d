"""Model-family adapters, derived from the loaded model itself.

Methods and the block loop talk to an adapter, never to a concrete architecture, so one method file
serves every decoder-only family transformers ships. Nothing here lists families: the adapter is
read off the model's structure and config.

  blocks      the ModuleList whose length is the config's layer count
  embedding   model.get_input_embeddings(); head: model.get_output_embeddings()
  final norm  the last norm module that runs after the last block (traced on a tiny forward)
  linears     every nn.Linear inside a block, except routers (a gate whose outputs are the
              experts' or a scalar: out_features in {1, num_experts}) which are never pruned
  groups      linears that read the *same input tensor* on a tiny forward share one statistic
              (q/k/v, gate/up, Phi-3's fused qkv alone, ...); linears a tiny forward does not reach
              (experts no token was routed to) group as their module declares
              (`prunebench_input_groups`) or stand alone
  sublayers   attention = the block child holding the first linear to run, MLP = the one holding
              the last; the norm run just before each is its input norm; `parallel` when attention
              and MLP read the same residual input (GPT-NeoX, Falcon, Cohere)

A layout the derivation cannot read fails with a message naming the part and the YAML to declare
it: conf/model/<name>.yaml may carry `adapter: {layers: ..., final_norm: ...}` (any field below).
OVERRIDES holds the same, as data, for layouts that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

# model_type -> adapter fields the structure cannot tell (data, not code paths). Empty today: every
# family in the tiny matrix derives; a layout that does not goes here or in its conf/model YAML.
OVERRIDES: dict[str, dict[str, Any]] = {}

_ATTR = "_prunebench_adapter"   # the derived adapter is cached on the model object


class AdapterError(ValueError):
    """The model's layout could not be read; the message says which part and how to declare it."""


@dataclass(frozen=True)
class FamilyAdapter:
    """Where a loaded decoder-only model keeps its parts (dotted paths; blocks relative to a block)."""

    family: str                      # the config's model_type
    layers: str                      # ModuleList of decoder blocks (relative to the CausalLM)
    embed: str                       # token embedding
    final_norm: str
    lm_head: str
    attn: str                        # attention sublayer inside a block
    mlp: str                         # MLP sublayer inside a block ("" if its linears sit on the block)
    attn_inputs: tuple[str, ...]     # linears reading the attention input (relative to attn)
    attn_output: str
    mlp_inputs: tuple[str, ...]      # linears reading the MLP input (relative to mlp)
    mlp_output: str
    attn_norm: str                   # norm before attention
    mlp_norm: str                    # norm before the MLP (== attn_norm when one norm feeds both)
    gated_mlp: bool = True
    parallel: bool = False           # attention and MLP read the same block input (not sequential)
    moe: bool = False                # the MLP routes tokens to experts
    block_returns_tuple: bool = False
    # block-relative linear names grouped by shared input, in forward order, one tuple per block
    # signature (the sorted linear names of a block: MoE and dense blocks may alternate)
    traced_groups: dict = field(default_factory=dict, compare=False, hash=False)
    routers: tuple[str, ...] = ()    # block-relative names of routing linears (never pruned by default)
    width_blocker: str = ""          # why width surgery does not apply ("" = it does)

    @property
    def model_types(self) -> tuple[str, ...]:
        return (self.family,)

    @property
    def supports_surgery(self) -> bool:
        """Structured width surgery (harness.surgery: heads, MLP channels) applies; `width_blocker`
        says why not. Depth surgery (drop_blocks) works for every layout."""
        return not self.width_blocker

    # -- navigation -----------------------------------------------------------------------------
    @staticmethod
    def _get(root: nn.Module, path: str) -> nn.Module:
        mod = root
        for part in filter(None, path.split(".")):
            mod = getattr(mod, part)
        return mod

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return self._get(model, self.layers)

    def block_prefix(self, index: int) -> str:
        return f"{self.layers}.{index}"

    def attention(self, block: nn.Module) -> nn.Module:
        return self._get(block, self.attn)

    def mlp_module(self, block: nn.Module) -> nn.Module:
        return self._get(block, self.mlp or "")

    def embedding(self, model: nn.Module) -> nn.Embedding:
        return self._get(model, self.embed)

    def head(self, model: nn.Module) -> nn.Linear:
        return self._get(model, self.lm_head)

    def block_output(self, output):
        """Decoder layers return a tensor (transformers>=5) or a tuple (older/other families)."""
        return output[0] if isinstance(output, (tuple, list)) else output

    # -- linears --------------------------------------------------------------------------------
    def _is_router(self, name: str, lin: nn.Linear) -> bool:
        return name in self.routers or name.rsplit(".", 1)[-1] in {r.rsplit(".", 1)[-1] for r in self.routers}

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Block-relative name -> linear, forward order where traced; routers left out. A sublayer
        dropped by harness.surgery has none."""
        found = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear) and not self._is_router(n, m)}
        order = [n for g in self.input_groups(block) for n in g]
        return {n: found[n] for n in order if n in found}

    def input_groups(self, block: nn.Module | None = None) -> list[tuple[str, ...]]:
        """Linears (block-relative names) grouped by shared input, in forward order. One statistic
        (norm, Hessian) per group serves all its members. Without a block: block 0 as traced."""
        if block is None:
            return [tuple(g) for g in next(iter(self.traced_groups.values()), ())]
        present = {n: m for n, m in block.named_modules()
                   if isinstance(m, nn.Linear) and not self._is_router(n, m)}
        groups: list[tuple[str, ...]] = []
        seen: set[str] = set()
        for group in self.traced_groups.get(_signature(present), ()):
            kept = tuple(n for n in group if n in present)
            if kept:
                groups.append(kept)
                seen.update(kept)
        # not reached by the trace (an expert no token went to): the module's declared grouping
        for path, mod in block.named_modules():
            for group in getattr(mod, "prunebench_input_groups", ()):
                names = tuple(f"{path}.{n}" if path else n for n in group)
                kept = tuple(n for n in names if n in present and n not in seen)
                if kept:
                    groups.append(kept)
                    seen.update(kept)
        groups.extend((n,) for n in present if n not in seen)
        return groups

    def linear_names(self, block: nn.Module | None = None) -> list[str]:
        return [name for group in self.input_groups(block) for name in group]

    def reads_stream(self, name: str) -> bool:
        """True for a linear reading the residual stream (attention/MLP inputs), False for one
        writing it (attention/MLP outputs)."""
        leaf = name.rsplit(".", 1)[-1]
        return leaf in {n.rsplit(".", 1)[-1] for n in (*self.attn_inputs, *self.mlp_inputs)}


def _signature(linears) -> str:
    return "|".join(sorted(linears))


# -------------------------------------------------------------------------------------------------
# derivation

def _path_of(root: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    for name, mod in root.named_modules():
        if mod is target:
            return name
    return None


def _is_norm(mod: nn.Module) -> bool:
    return isinstance(mod, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))) or "norm" in type(mod).__name__.lower()


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _n_experts(config) -> int | None:
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _find_layers(model: nn.Module, n_layers: int) -> str:
    candidates = [(name, mod) for name, mod in model.named_modules()
                  if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and name]
    candidates = [(n, m) for n, m in candidates if all(isinstance(b, nn.Module) and any(
        isinstance(x, nn.Linear) for x in b.modules()) for b in m)]
    # experts lists inside blocks can have the same length: keep the outermost list
    candidates = [(n, m) for n, m in candidates if not any(n.startswith(o + ".") for o, _ in candidates)]
    if len(candidates) != 1:
        what = "none" if not candidates else ", ".join(n for n, _ in candidates)
        raise AdapterError(
            f"cannot find the decoder blocks: expected one ModuleList of {n_layers} blocks holding "
            f"linears, found {what}. Declare it in conf/model/<name>.yaml:\n  adapter:\n    layers: "
            f"model.layers")
    return candidates[0][0]


def _twin(model: nn.Module) -> nn.Module:
    """A small random-init model of the same class and layer layout, for tracing a model whose
    weights are not in memory (meta device, disk offload): module names, block kinds and which
    linears share an input do not depend on the widths."""
    import copy

    from transformers import AutoModelForCausalLM

    from harness.experts import unfuse_experts

    config = copy.deepcopy(model.config)
    text = _text_config(config)
    n_q = getattr(text, "num_attention_heads", 4) or 4
    n_kv = getattr(text, "num_key_value_heads", None) or n_q
    kv = min(n_kv, 2)
    q = kv * min(n_q // max(n_kv, 1), 2)
    head_dim = 16
    updates = {"num_attention_heads": q, "hidden_size": q * head_dim, "vocab_size": min(text.vocab_size, 512)}
    if getattr(text, "num_key_value_heads", None) is not None:
        updates["num_key_value_heads"] = kv
    if getattr(text, "head_dim", None) is not None:
        updates["head_dim"] = head_dim
    for key in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size", "ffn_dim"):
        if isinstance(getattr(text, key, None), int):
            updates[key] = 32
    for key, value in updates.items():
        setattr(text, key, value)
    try:
        twin = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    except Exception as exc:  # noqa: BLE001 - any failure means: declare the layout instead
        raise AdapterError(f"cannot trace a small twin of model_type={getattr(config, 'model_type', None)!r} "
                           f"whose weights are not in memory ({exc}); declare the adapter in "
                           f"conf/model/<name>.yaml under `adapter:`") from exc
    unfuse_experts(twin)
    return twin


@torch.no_grad()
def _trace(model: nn.Module, layers_path: str) -> dict:
    """One tiny forward with hooks: the order in which modules run and which tensor each linear and
    norm reads (by identity), per block and outside the blocks."""
    blocks = FamilyAdapter._get(model, layers_path)
    events: list[tuple[int, str, int, int]] = []   # (block or -1, relative name, input id, output id)
    keep: list[torch.Tensor] = []                    # keep tensors alive: ids stay unique
    handles = []
    block_out: dict[int, Any] = {}

    def hook_for(bi: int, name: str):
        def hook(_mod, args, kwargs, out):
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
            y = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(x, torch.Tensor):
                keep.extend([x, y] if isinstance(y, torch.Tensor) else [x])
                events.append((bi, name, id(x), id(y) if isinstance(y, torch.Tensor) else -1))
        return hook

    block_ids = {id(b): i for i, b in enumerate(blocks)}
    for i, block in enumerate(blocks):
        for name, mod in block.named_modules():
            handles.append(mod.register_forward_hook(hook_for(i, name), with_kwargs=True))
        handles.append(block.register_forward_hook(
            lambda _m, _a, out, i=i: block_out.__setitem__(i, out)))
    for name, mod in model.named_modules():
        inside = any(name == layers_path or name.startswith(layers_path + ".") for _ in [0])
        if not inside and id(mod) not in block_ids and name and (_is_norm(mod) or isinstance(mod, nn.Linear)):
            handles.append(mod.register_forward_hook(hook_for(-1, name), with_kwargs=True))
    device = next(model.parameters()).device
    if device.type == "meta":
        for h in handles:
            h.remove()
        return _trace(_twin(model), layers_path)
    n_tok = 8
    ids = torch.arange(3, 3 + n_tok, device=device).clamp(max=_text_config(model.config).vocab_size - 1)[None]
    try:
        model(ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {"events": events, "block_out": block_out}


def _groups_of_block(events: list, block: nn.Module, routers: set[str]) -> list[tuple[str, ...]]:
    linears = {n for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    by_input: dict[int, list[str]] = {}
    order: list[int] = []
    for _bi, name, xid, _yid in events:
        if name in linears and name not in routers:
            if xid not in by_input:
                by_input[xid] = []
                order.append(xid)
            if name not in by_input[xid]:
                by_input[xid].append(name)
    return [tuple(by_input[x]) for x in order]


def _routers(block: nn.Module, n_experts: int | None) -> tuple[str, ...]:
    """Routing linears: inside a MoE block, a linear whose outputs are one per expert or a single
    scalar gate (Qwen-MoE's shared_expert_gate). Routers stored as bare parameters (transformers>=5
    TopKRouter) are not nn.Linear and never reach the linears list anyway."""
    if not n_experts:
        return ()
    return tuple(n for n, m in block.named_modules()
                 if isinstance(m, nn.Linear) and m.out_features in (1, n_experts) and "experts." not in n)


def _child(name: str) -> str:
    return name.split(".", 1)[0] if "." in name else ""


def _width_blocker(block: nn.Module, attn: str, mlp: str, attn_inputs: tuple[str, ...], moe: bool,
                   config) -> str:
    """Why head / MLP-channel surgery cannot apply to this layout ("" when it can)."""
    if moe:
        return "routed experts (prune whole experts with the `experts` unit instead)"
    if len(attn_inputs) != 3:
        return f"fused attention input projection {attn_inputs} (q, k and v in one linear)"
    if not mlp:
        return "MLP linears sit on the block (no MLP module to resize)"
    n_q = getattr(config, "num_attention_heads", 0) or 1
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_q
    for name, mod in FamilyAdapter._get(block, attn).named_modules():
        w = getattr(mod, "weight", None)
        if name and _is_norm(mod) and isinstance(w, torch.Tensor) and w.numel() != head_dim:
            return (f"attention norm {attn}.{name} spans {w.numel()} channels, not one head "
                    f"({head_dim}): its statistics change when heads are removed")
    return ""


def _declared_fields(model_type: str, override: dict | None) -> dict:
    """The fields not to derive: OVERRIDES[model_type], then the model's `adapter:` section on top."""
    declared = {**OVERRIDES.get(model_type, {}), **dict(override or {})}
    valid = {f.name for f in fields(FamilyAdapter)}
    bad = sorted(set(declared) - valid)
    if bad:
        raise AdapterError(f"unknown adapter field(s) {bad} in the override; fields: {sorted(valid - {'traced_groups'})}")
    return declared


def _embed_and_head(model: nn.Module, declared: dict, model_type: str) -> tuple[str, str]:
    """Paths of the input embedding and the LM head (found from transformers' accessors)."""
    embed = declared.get("embed") or _path_of(model, model.get_input_embeddings())
    head = declared.get("lm_head") or _path_of(model, model.get_output_embeddings())
    for part, value, example in (("embed", embed, "model.embed_tokens"), ("lm_head", head, "lm_head")):
        if not value:
            raise AdapterError(f"cannot find the {part} of model_type={model_type!r}. Declare it in "
                               f"conf/model/<name>.yaml:\n  adapter:\n    {part}: {example}")
    return embed, head


def _block_linears(block: nn.Module, routers: tuple[str, ...]) -> list[str]:
    return [n for n, m in block.named_modules() if isinstance(m, nn.Linear) and n not in routers]


def _traced_groups(blocks, events: list, routers: tuple[str, ...]) -> dict:
    """{layout signature: linears grouped by the input they read}, traced once per distinct block
    layout (blocks with the same linears group alike; alternating layouts each get their own)."""
    traced_groups = {}
    for i, block in enumerate(blocks):
        sig = _signature(_block_linears(block, routers))
        if sig not in traced_groups:
            traced_groups[sig] = [g for g in _groups_of_block([e for e in events if e[0] == i], block, set(routers))]
    return traced_groups


def _relative(name: str, sub: str) -> str:
    return name[len(sub) + 1:] if sub else name


def _sublayer_groups(groups0: list, attn: str, mlp: str, model_type: str) -> tuple[list, list]:
    """Block 0's input groups split into the attention's and the MLP's (an MLP without its own module:
    the block-level linears; routed experts left out when the MLP has shared linears too)."""
    def members(sub: str, exclude_experts: bool) -> list[tuple[str, ...]]:
        """groups0 restricted to the linears of sublayer `sub` (block-level ones when sub == "")."""
        out = []
        for g in groups0:
            kept = tuple(n for n in g if (_child(n) == sub if sub else "." not in n)
                         and not (exclude_experts and "experts." in n))
            if kept:
                out.append(kept)
        return out

    in_attn = members(attn, False) if attn else []
    in_mlp = (members(mlp, True) or members(mlp, False)) if mlp else members("", False)
    if not in_attn or not in_mlp:
        raise AdapterError(f"cannot tell the attention linears from the MLP linears of model_type={model_type!r} "
                           f"(attn={attn!r}, mlp={mlp!r}, groups={groups0}). Declare them in conf/model/<name>.yaml:"
                           f"\n  adapter:\n    attn: self_attn\n    mlp: mlp")
    return in_attn, in_mlp


def _block_norms(block0: nn.Module, b0: list, attn: str, mlp: str, first_attn: str, first_mlp: str,
                 declared: dict) -> tuple[str, str, bool]:
    """(attn_norm, mlp_norm, parallel) of block 0 from its traced events `b0`: a sublayer's norm is the
    last block-level norm that ran before its first linear; "" = no norm in front (OLMo-2 normalises
    the sublayer outputs instead)."""
    order = [name for _bi, name, _x, _y in b0]
    input_of = {name: x for _bi, name, x, _y in b0}
    output_of = {name: y for _bi, name, _x, y in b0}

    def norm_before(sub: str, first_linear: str) -> str | None:
        idx = order.index(first_linear) if first_linear in order else len(order)
        x = input_of.get(sub) if sub else input_of.get(first_linear)
        cands = [n for n in order[:idx] if _is_norm(FamilyAdapter._get(block0, n))
                 and not (attn and n.startswith(attn + ".")) and not (mlp and n.startswith(mlp + "."))]
        if x is not None:   # a norm in front of the sublayer produced exactly its input
            return ([n for n in cands if output_of.get(n) == x] or [None])[-1]
        exact = [n for n in cands if output_of.get(n) == x]
        return (exact or cands or [None])[-1]

    attn_norm = declared.get("attn_norm", norm_before(attn, first_attn) or "")
    mlp_norm = declared.get("mlp_norm", norm_before(mlp, first_mlp) or "")
    parallel = declared.get("parallel")
    if parallel is None:   # both sublayers read the block input (through one norm or two)
        x_attn = input_of.get(attn_norm) if attn_norm else input_of.get(attn or first_attn)
        x_mlp = input_of.get(mlp_norm) if mlp_norm else input_of.get(mlp or first_mlp)
        parallel = (bool(attn_norm) and attn_norm == mlp_norm) or (x_attn is not None and x_attn == x_mlp)
    return attn_norm, mlp_norm, parallel


def _final_norm(model: nn.Module, events: list, declared: dict, model_type: str) -> str:
    """The last norm outside the blocks that ran (block index -1 in the trace)."""
    final_norm = declared.get("final_norm")
    if not final_norm:
        outside = [name for bi, name, _x, _y in events if bi == -1 and _is_norm(FamilyAdapter._get(model, name))]
        final_norm = outside[-1] if outside else None
    if not final_norm:
        raise AdapterError(f"cannot find the final norm of model_type={model_type!r}. Declare it in "
                           f"conf/model/<name>.yaml:\n  adapter:\n    final_norm: model.norm")
    return final_norm


def derive_adapter(model: nn.Module, override: dict | None = None) -> FamilyAdapter:
    """Read the adapter off `model` (one tiny forward); `override` (conf/model `adapter:`) and
    OVERRIDES[model_type] replace derived fields."""
    config = _text_config(model.config)
    model_type = getattr(model.config, "model_type", None) or "unknown"
    declared = _declared_fields(model_type, override)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    layers = declared.get("layers") or _find_layers(model, int(n_layers or -1))
    blocks = FamilyAdapter._get(model, layers)
    embed, head = _embed_and_head(model, declared, model_type)

    trace = _trace(model, layers)
    events = trace["events"]
    n_experts = _n_experts(config)
    routers = tuple(declared.get("routers") or dict.fromkeys(r for b in blocks for r in _routers(b, n_experts)))
    traced_groups = _traced_groups(blocks, events, routers)
    groups0 = traced_groups[_signature(_block_linears(blocks[0], routers))]
    if len(groups0) < 2:
        raise AdapterError(f"cannot find the attention and MLP linears of block 0 of model_type={model_type!r} "
                           f"(traced groups: {groups0}). Declare them in conf/model/<name>.yaml:\n  adapter:\n"
                           f"    attn: self_attn\n    mlp: mlp")

    # sublayers: attention holds the first linear to run, the MLP the last
    attn = declared.get("attn", _child(groups0[0][0]))
    mlp = declared.get("mlp", _child(groups0[-1][-1]))
    moe = bool(n_experts) and bool(mlp) and n_experts is not None and any(
        "expert" in n for n, _ in FamilyAdapter._get(blocks[0], mlp).named_modules())
    in_attn, in_mlp = _sublayer_groups(groups0, attn, mlp, model_type)
    attn_inputs = tuple(declared.get("attn_inputs") or (_relative(n, attn) for n in in_attn[0]))
    attn_output = declared.get("attn_output") or _relative(in_attn[-1][-1], attn)
    mlp_inputs = tuple(declared.get("mlp_inputs") or (_relative(n, mlp) for n in in_mlp[0]))
    mlp_output = declared.get("mlp_output") or _relative(in_mlp[-1][-1], mlp)
    attn_norm, mlp_norm, parallel = _block_norms(blocks[0], [e for e in events if e[0] == 0], attn, mlp,
                                                 in_attn[0][0], in_mlp[0][0], declared)
    final_norm = _final_norm(model, events, declared, model_type)
    gated = declared.get("gated_mlp", len(mlp_inputs) >= 2 or any("gate" in n for n in mlp_inputs))
    width_blocker = declared.get("width_blocker", _width_blocker(blocks[0], attn, mlp, attn_inputs, moe, config))
    return FamilyAdapter(
        family=model_type, layers=layers, embed=embed, final_norm=final_norm, lm_head=head, attn=attn,
        mlp=mlp, attn_inputs=attn_inputs, attn_output=attn_output, mlp_inputs=mlp_inputs,
        mlp_output=mlp_output, attn_norm=attn_norm, mlp_norm=mlp_norm, gated_mlp=bool(gated),
        parallel=bool(parallel), moe=moe, block_returns_tuple=isinstance(trace["block_out"].get(0), (tuple, list)),
        traced_groups=traced_groups, routers=routers, width_blocker=width_blocker)


def adapter_for(model: nn.Module, override: dict | None = None) -> FamilyAdapter:
    """The model's adapter, derived once and cached on the model object (a later call with an
    override derives again)."""
    cached = model.__dict__.get(_ATTR)
    if cached is not None and not override:
        return cached
    from harness.encoders import encoder_adapter, is_encoder

    # encoders (BERT family): a declared layout (harness.encoders.ENCODER_LAYOUTS), not a derivation
    adapter = encoder_adapter(model) if is_encoder(model.config) else derive_adapter(model, override)
    model.__dict__[_ATTR] = adapter
    return adapter


def with_fields(adapter: FamilyAdapter, **changes) -> FamilyAdapter:
    return replace(adapter, **changes)
