"""Mixture-of-experts MLPs as ordinary linears.

transformers>=5 stores a layer's experts as two 3-D parameters (`gate_up_proj` [E, 2F, D],
`down_proj` [E, D, F]) inside one `*Experts` module (Mixtral, Qwen2/3-MoE, OLMoE, ...). Pruning
works on linears, so `unfuse_experts` swaps each such module for `RoutedExperts`: one `ExpertMLP`
(gate_proj, up_proj, down_proj nn.Linear) per expert, same forward, same routing. Each expert's
linears then see exactly the tokens routed to it, so weight pruning gathers per-expert statistics
with no special case, and masks land on real weights.

`RoutedExperts` saves and loads under the fused names (`gate_up_proj`, `down_proj`), so
`save_pretrained` writes the layout transformers expects and a pruned model reloads with plain
`from_pretrained`; the model's state-dict sha256 is unchanged by unfusing.

`prune_experts` removes whole experts (the `experts` structured unit): expert modules, the
router's rows, the experts count in the module and in the config, uniformly in every MoE layer so
the pruned model stays an ordinary one.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


class ExpertMLP(nn.Module):
    """One expert: down(act(gate(x)) * up(x))."""

    prunebench_input_groups = (("gate_proj", "up_proj"), ("down_proj",))

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor):
        super().__init__()
        f, d = gate.shape
        self.gate_proj = nn.Linear(d, f, bias=False, device=gate.device, dtype=gate.dtype)
        self.up_proj = nn.Linear(d, f, bias=False, device=gate.device, dtype=gate.dtype)
        self.down_proj = nn.Linear(f, d, bias=False, device=gate.device, dtype=gate.dtype)
        with torch.no_grad():
            self.gate_proj.weight.copy_(gate)
            self.up_proj.weight.copy_(up)
            self.down_proj.weight.copy_(down)


class RoutedExperts(nn.Module):
    """Drop-in for transformers' fused `*Experts`: forward(hidden [T, D], top_k_index [T, k],
    top_k_weights [T, k]) -> [T, D], summing each token's routed experts weighted by the router."""

    def __init__(self, experts: list[ExpertMLP], act_fn: nn.Module):
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.act_fn = act_fn
        self.num_experts = len(experts)

    @classmethod
    def from_fused(cls, fused: nn.Module) -> "RoutedExperts":
        gate_up, down = fused.gate_up_proj.data, fused.down_proj.data   # [E, 2F, D], [E, D, F]
        f = gate_up.shape[1] // 2
        experts = [ExpertMLP(gate_up[e, :f], gate_up[e, f:], down[e]) for e in range(gate_up.shape[0])]
        return cls(experts, fused.act_fn)

    def run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on tokens x [t, D] (unweighted)."""
        expert = self.experts[e]
        return expert.down_proj(self.act_fn(expert.gate_proj(x)) * expert.up_proj(x))

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where(top_k_index == e)       # tokens routed to expert e
            if token_idx.numel() == 0:
                continue
            y = self.run_expert(e, hidden_states[token_idx])      # [t_e, D]
            y = y * top_k_weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out

    # -- the fused on-disk layout ---------------------------------------------------------------
    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        gate_up = torch.stack([torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in self.experts])
        down = torch.stack([e.down_proj.weight for e in self.experts])
        return gate_up, down

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """The fused layout only (the per-expert linears are not written: no recursion)."""
        if destination is None:
            from collections import OrderedDict
            destination = OrderedDict()
        gate_up, down = self.fused_weights()
        destination[prefix + "gate_up_proj"] = gate_up if keep_vars else gate_up.detach()
        destination[prefix + "down_proj"] = down if keep_vars else down.detach()
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in ("gate_up_proj", "down_proj"):
            if prefix + key not in state_dict:
                missing_keys.append(prefix + key)
        if missing_keys:
            return
        gate_up, down = state_dict[prefix + "gate_up_proj"], state_dict[prefix + "down_proj"]
        f = gate_up.shape[1] // 2
        with torch.no_grad():
            for e, expert in enumerate(self.experts):
                expert.gate_proj.weight.copy_(gate_up[e, :f])
                expert.up_proj.weight.copy_(gate_up[e, f:])
                expert.down_proj.weight.copy_(down[e])
        for key in list(state_dict):
            if key.startswith(prefix + "experts."):
                unexpected_keys.append(key)


def _is_fused_experts(mod: nn.Module) -> bool:
    params = dict(mod.named_parameters(recurse=False))
    gu, dn = params.get("gate_up_proj"), params.get("down_proj")
    return (gu is not None and dn is not None and gu.dim() == 3 and dn.dim() == 3
            and set(params) == {"gate_up_proj", "down_proj"} and hasattr(mod, "act_fn"))


def unfuse_experts(model: nn.Module) -> list[str]:
    """Replace every fused experts module by RoutedExperts; returns their paths. Fused layouts with
    biases or clamped activations (gpt-oss) are left alone (their linears are then not pruned)."""
    done = []
    for name, mod in list(model.named_modules()):
        if _is_fused_experts(mod):
            parent_path, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, leaf, RoutedExperts.from_fused(mod))
            done.append(name)
    return done


def routed_experts(block: nn.Module) -> tuple[str, RoutedExperts] | None:
    for name, mod in block.named_modules():
        if isinstance(mod, RoutedExperts):
            return name, mod
    return None


def router_of(moe_block: nn.Module) -> nn.Module:
    """The routing module of a MoE block: the child holding a [num_experts, D] weight next to the
    experts (transformers' TopKRouter, or a plain nn.Linear in older layouts)."""
    experts = next(m for m in moe_block.children() if isinstance(m, RoutedExperts))
    for child in moe_block.children():
        w = getattr(child, "weight", None)
        if child is not experts and isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[0] == experts.num_experts:
            return child
    raise ValueError(f"no router with {experts.num_experts} outputs in {type(moe_block).__name__}")


def prune_experts(model: nn.Module, adapter, keep: Sequence[Sequence[int]]) -> None:
    """Keep experts `keep[i]` in MoE block i (same count everywhere; blocks without experts get
    an empty list). Router rows follow, top-k is capped at the experts left."""
    counts = {len(k) for k, blk in zip(keep, adapter.blocks(model)) if routed_experts(blk)}
    if len(counts) != 1:
        raise ValueError(f"every MoE layer must keep the same number of experts, got {sorted(counts)}")
    n_keep = counts.pop()
    for kept, block in zip(keep, adapter.blocks(model)):
        found = routed_experts(block)
        if not found:
            continue
        path, experts = found
        moe_block = block.get_submodule(path.rpartition(".")[0]) if "." in path else block
        router = router_of(moe_block)
        idx = torch.as_tensor(sorted(int(k) for k in kept), dtype=torch.long)
        experts.experts = nn.ModuleList([experts.experts[int(i)] for i in idx])
        experts.num_experts = n_keep
        n_old = router.weight.shape[0]
        with torch.no_grad():   # every per-expert row of the router: weight [E, D], bias / correction [E]
            for pname, p in list(router.named_parameters(recurse=False)):
                if p.shape[0] == n_old:
                    setattr(router, pname, nn.Parameter(p.data.index_select(0, idx.to(p.device))))
            for bname, b in list(router.named_buffers(recurse=False)):
                if b.dim() >= 1 and b.shape[0] == n_old:
                    setattr(router, bname, b.index_select(0, idx.to(b.device)))
        for obj in (router, moe_block):
            if hasattr(obj, "num_experts"):
                obj.num_experts = n_keep
            if hasattr(obj, "out_features"):
                obj.out_features = n_keep
            if getattr(obj, "top_k", 0) > n_keep:
                obj.top_k = n_keep
    cfg = model.config
    for key in _EXPERT_COUNT_KEYS:
        if isinstance(getattr(cfg, key, None), int):
            setattr(cfg, key, n_keep)
    if getattr(cfg, "num_experts_per_tok", 0) > n_keep:
        cfg.num_experts_per_tok = n_keep
