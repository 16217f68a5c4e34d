"""Width pruning shared by LLM-Pruner, Minitron and later width methods: plan uniform widths for a
parameter budget, then keep the highest-scoring heads / MLP channels / hidden channels.

Target `width` ratio = fraction of ALL model parameters removed (embeddings included, as the
record's params_before/after count them). Widths stay uniform across blocks so the pruned model
is isomorphic (plain from_pretrained). Axes:
  heads   attention heads, at the granularity `heads`:
            "kv_group" (default, LLM-Pruner's reference): whole KV groups go, each with its query
            heads (on MHA every head is its own group, so single heads go);
            "query": query heads inside every KV group (every KV group kept; impossible on MHA)
  mlp     intermediate_size
  hidden  hidden_size (embedding channels, the whole residual stream)
Hidden widths stay multiples of the query-head count (transformers validates that on load).
All chosen axes shrink by one common factor s; heads are integral, so s is first solved with
fractional heads, the head count rounded, and the continuous axes re-solved to hit the budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from harness import surgery
from harness.adapters import FamilyAdapter

AXES = ("heads", "mlp", "hidden")


HEAD_GRANULARITIES = ("kv_group", "query")


@dataclass(frozen=True)
class WidthPlan:
    q_per_group: int
    intermediate: int
    hidden: int
    params_before: int
    params_after: int
    kv_groups: int = 0               # KV groups kept (0: all)

    def describe(self) -> dict:
        d = asdict(self)
        d["ratio_removed"] = 1 - self.params_after / self.params_before
        return d


def parse_axes(axes: str | tuple[str, ...]) -> tuple[str, ...]:
    got = tuple(a.strip() for a in (axes.split(",") if isinstance(axes, str) else axes) if a.strip())
    bad = [a for a in got if a not in AXES]
    if bad or not got:
        raise ValueError(f"width axes must be a non-empty subset of {AXES}, got {axes!r}")
    return got


def _bisect(fn, lo=0.0, hi=0.999, steps=60) -> float:
    """s in [lo, hi] with fn(s) ~ 0 for fn decreasing in s (params left minus goal)."""
    if fn(lo) <= 0:
        return lo
    if fn(hi) > 0:
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fn(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def _nearest_kv(n_kv: int, group: int, hidden: int, fraction: float) -> int:
    """Kept KV-group count closest to `fraction` * n_kv among those transformers can load
    (hidden % query heads == 0), at least 1. When the plan removes half a group or more but the
    closest loadable count is all of them (e.g. 4 heads, hidden 64: 3 is not loadable), the next
    loadable count below goes, and the other axes absorb the difference in the budget."""
    ok = [c for c in range(1, n_kv + 1) if hidden % (c * group) == 0] or [n_kv]
    best = min(ok, key=lambda c: (abs(c - fraction * n_kv), -c))
    below = [c for c in ok if c < n_kv]
    if best == n_kv and fraction * n_kv <= n_kv - 0.5 and below:
        best = max(below)
    return best


def plan_width(config, ratio: float, axes: tuple[str, ...], heads: str = "kv_group") -> WidthPlan:
    if heads not in HEAD_GRANULARITIES:
        raise ValueError(f"head granularity must be one of {HEAD_GRANULARITIES}, got {heads!r}")
    n_q, n_kv, _ = surgery.head_layout(config)
    group = n_q // n_kv
    D, F = config.hidden_size, config.intermediate_size
    total = surgery.llama_param_count(config)
    goal = total * (1 - ratio)
    by_group = heads == "kv_group"

    def count(s_cont: float, q: float, kv: float) -> float:
        return surgery.llama_param_count(
            config, hidden=D * (1 - s_cont) if "hidden" in axes else D,
            intermediate=F * (1 - s_cont) if "mlp" in axes else F, n_q=q * kv, n_kv=kv)

    q, kv = group, n_kv
    if "heads" in axes:
        if by_group:
            s = _bisect(lambda s: count(s, group, n_kv * (1 - s)) - goal)
            kv = _nearest_kv(n_kv, group, D, 1 - s)
        else:
            s = _bisect(lambda s: count(s, group * (1 - s), n_kv) - goal)
            q = min(group, max(1, round(group * (1 - s))))
    s2 = _bisect(lambda s: count(s, q, kv) - goal) if set(axes) - {"heads"} else 0.0
    f = max(1, round(F * (1 - s2))) if "mlp" in axes else F
    d = D
    if "hidden" in axes:
        # transformers' LlamaConfig insists on hidden_size % num_attention_heads == 0 (even with an
        # explicit head_dim), so the hidden width moves in steps of the query-head count ...
        step = q * kv
        d = max(step, round(D * (1 - s2) / step) * step)
        if "mlp" in axes:  # ... and the MLP absorbs the rounding
            g = _bisect(lambda t: surgery.llama_param_count(config, hidden=d, intermediate=F * (1 - t),
                                                            n_q=q * kv, n_kv=kv) - goal)
            f = max(1, round(F * (1 - g)))
    after = surgery.llama_param_count(config, hidden=d, intermediate=f, n_q=q * kv, n_kv=kv)
    return WidthPlan(q, f, d, total, after, kv)


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k highest scores (ties -> lower index), in ascending order."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def apply_width(model: nn.Module, adapter: FamilyAdapter, plan: WidthPlan, head_scores: torch.Tensor | None,
                mlp_scores: torch.Tensor | None, hidden_scores: torch.Tensor | None,
                kv_scores: torch.Tensor | None = None) -> dict:
    """Prune to `plan` keeping the top-scoring units. head_scores [L, n_q], mlp_scores [L, F],
    hidden_scores [D] (higher = keep; None only where the plan leaves that axis alone);
    kv_scores [L, n_kv]: the K/V heads' own share of a KV group's score (added to its query heads').
    Returns the removed units per axis."""
    cfg = model.config
    if plan.hidden < cfg.hidden_size and surgery.hidden_blocker(model, adapter):   # before any surgery
        raise surgery.SurgeryError(surgery.hidden_blocker(model, adapter))
    n_q, n_kv, hd = surgery.head_layout(cfg)
    group = n_q // n_kv
    removed: dict = {}
    blocks = adapter.blocks(model)
    if plan.kv_groups and plan.kv_groups < n_kv:
        removed["kv_groups"] = []
        for i, blk in enumerate(blocks):
            score = head_scores[i].view(n_kv, group).sum(1)            # [n_kv]
            if kv_scores is not None:
                score = score + kv_scores[i]
            keep_kv = _top(score, plan.kv_groups)
            surgery.prune_heads(blk, adapter, hd, n_kv, keep_kv, [list(range(group))] * len(keep_kv))
            removed["kv_groups"].append([j for j in range(n_kv) if j not in keep_kv])
        surgery.set_head_config(cfg, plan.kv_groups * group, plan.kv_groups, hd)
    elif plan.q_per_group < group:
        removed["heads"] = []
        for i, blk in enumerate(blocks):
            per_group = head_scores[i].view(n_kv, group)   # [n_kv, group]
            keep_q = [_top(per_group[j], plan.q_per_group) for j in range(n_kv)]
            surgery.prune_heads(blk, adapter, hd, n_kv, list(range(n_kv)), keep_q)
            removed["heads"].append([j * group + h for j in range(n_kv) for h in range(group) if h not in keep_q[j]])
        surgery.set_head_config(cfg, plan.q_per_group * n_kv, n_kv, hd)
    if plan.intermediate < cfg.intermediate_size:
        removed["mlp_channels_per_block"] = cfg.intermediate_size - plan.intermediate
        for i, blk in enumerate(blocks):
            surgery.prune_mlp_channels(blk, adapter, _top(mlp_scores[i], plan.intermediate))
        cfg.intermediate_size = plan.intermediate
    if plan.hidden < cfg.hidden_size:
        keep = _top(hidden_scores, plan.hidden)
        removed["hidden_channels"] = [c for c in range(cfg.hidden_size) if c not in set(keep)]
        surgery.prune_hidden(model, adapter, keep)
    return removed
