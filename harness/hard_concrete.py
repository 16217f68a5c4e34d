"""Hard-concrete (L0) structure masks learnt jointly with Lagrange multipliers that pull the model to
a target shape: the mask learning of CoFi (Xia et al., ACL 2022) and Sheared LLaMA (Xia et al.,
ICLR 2024), shared by every method that learns structured masks (Sheared LLaMA, Compresso, ...).

HardConcrete       one learnable gate per unit (Louizos et al. 2018): log_alpha [..., n]; training
                   samples the stretched, clamped concrete variable, eval gives a deterministic mask;
                   prob_nonzero() is the differentiable L0 term; harden(keep) picks exactly `keep`
                   units per row by log_alpha (ties: the lower index).
ModelShape         layers / query heads / KV heads / MLP width / hidden width of a LLaMA-layout model.
StructureMasks     the masks of one decoder model, applied through forward hooks (the model's weights
                   are untouched until `prune`):
                     heads         o_proj input, per query head        z [L, n_kv, group] ("query")
                                   or per KV group with its query heads z [L, n_kv]     ("kv_group")
                     intermediate  down_proj input, per MLP channel     z [L, F]
                     hidden        embedding output and every o_proj / down_proj output, per
                                   residual channel                     z [D]
                     layers        o_proj and down_proj outputs of a block (the block's whole residual
                                   contribution: the reference's head_layer_z and mlp_z shared) z [L]
                   Masked channels of the residual stream stay exactly zero, so a hardened mask equals
                   harness.surgery's physical prune (which rescales the RMS norms for the missing
                   channels); `prune` folds the deterministic mask values into the weights and cuts.
Lagrangian         lambda1 * (s - t) + lambda2 * (s - t)^2 per structure on expected sparsities s and
                   targets t (mean over layers for per-layer structures); the lambdas are maximised
                   (`constraint_options` gives them `maximize=True`), masks and model minimise.
warmup_target      the target sparsity ramped linearly from `start` over the Lagrangian warm-up.

Reference defaults (LLM-Shearing, llmshearing/models/l0_module.py): temperature 2/3, stretch limits
(-0.1, 1.1), log_alpha initialised N(5, 0.01) and clamped to [log 1e-2, log 1e2] before each use,
deterministic mask sigmoid(log_alpha / T * 0.8) on the kept units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

EPS = 1e-6                                        # uniform noise kept inside (eps, 1 - eps)
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # reference clamp of log_alpha (constrain_parameters)
DETERMINISTIC_SCALE = 0.8                         # reference's deterministic mask: sigmoid(la / T * 0.8)
STRUCTURES = ("layers", "heads", "intermediate", "hidden")
HEAD_GRANULARITIES = ("query", "kv_group")


def logit(p: float) -> float:
    """log(p / (1 - p)): the log_alpha whose gate is open with odds p : 1 - p before stretching."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a keep probability must be in (0, 1), got {p}")
    return math.log(p) - math.log1p(-p)


class HardConcrete(nn.Module):
    """Gates for `shape` units (int or tuple; the last axis holds the units one row competes over).

    init_log_alpha: the mean of log_alpha at init (reference Sheared LLaMA: 5.0, nearly all open);
    `init_keep` sets it as logit(init_keep) instead (CoFi: droprate 0.5 -> init_keep 0.5)."""

    def __init__(self, shape: int | tuple[int, ...], init_keep: float | None = None,
                 init_log_alpha: float | None = 5.0, init_std: float = 0.01, temperature: float = 2 / 3,
                 limits: tuple[float, float] = (-0.1, 1.1),
                 log_alpha_range: tuple[float, float] | None = LOG_ALPHA_RANGE,
                 generator: torch.Generator | None = None):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"hard-concrete shape must be positive, got {shape}")
        lo, hi = float(limits[0]), float(limits[1])
        if not (lo < 0.0 and hi > 1.0):
            raise ValueError(f"stretch limits must bracket [0, 1], got {limits}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        mean = logit(init_keep) if init_keep is not None else float(init_log_alpha)
        self.temperature = float(temperature)
        self.limits = (lo, hi)
        self.log_alpha_range = log_alpha_range
        # gate params: the log-odds of each unit's gate being open
        self.log_alpha = nn.Parameter(torch.empty(shape).normal_(mean, init_std, generator=generator))

    @property
    def n(self) -> int:
        return self.log_alpha.shape[-1]

    def constrain(self) -> None:
        """Clamp log_alpha to the reference's range (in place, outside the graph)."""
        if self.log_alpha_range is not None:
            with torch.no_grad():
                self.log_alpha.clamp_(*self.log_alpha_range)

    def prob_nonzero(self) -> torch.Tensor:
        """P(gate != 0) per unit [shape], differentiable in log_alpha: the expected L0 norm's terms."""
        lo, hi = self.limits
        return torch.sigmoid(self.log_alpha - self.temperature * math.log(-lo / hi))

    def expected_count(self) -> torch.Tensor:
        """Expected number of open gates per row [shape[:-1]] (a scalar for one row)."""
        return self.prob_nonzero().sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One reparameterised sample in [0, 1] [shape] (exact zeros and ones have positive mass)."""
        lo, hi = self.limits
        u = torch.rand(self.log_alpha.shape, generator=generator, device=self.log_alpha.device)
        u = u.clamp(EPS, 1 - EPS).to(self.log_alpha.dtype)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (hi - lo) + lo).clamp(0.0, 1.0)

    def harden(self, keep: int) -> torch.Tensor:
        """bool [shape]: exactly `keep` units per row, the largest log_alpha (ties: lower index)."""
        if not 0 < int(keep) <= self.n:
            raise ValueError(f"keep must be in 1..{self.n}, got {keep}")
        order = torch.sort(-self.log_alpha.detach(), dim=-1, stable=True).indices   # [..., n]
        mask = torch.zeros(self.log_alpha.shape, dtype=torch.bool, device=self.log_alpha.device)
        return mask.scatter(-1, order[..., :int(keep)], True)

    def deterministic(self, keep: int | None = None) -> torch.Tensor:
        """The eval mask [shape]: the reference's sigmoid(log_alpha / T * 0.8) on the `keep` units
        harden picks (keep None: the rounded expected count of each row), zero elsewhere."""
        la = self.log_alpha.detach()
        soft = torch.sigmoid(la / self.temperature * DETERMINISTIC_SCALE)
        if keep is None:
            counts = self.expected_count().detach().round().clamp(min=0).long()   # [shape[:-1]]
            rank = torch.sort(torch.sort(-la, dim=-1, stable=True).indices, dim=-1).indices  # rank of each unit
            kept = rank < counts.unsqueeze(-1)
        else:
            kept = self.harden(keep)
        return soft * kept

    def forward(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample(generator) if self.training else self.deterministic()


# -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """Widths of a LLaMA-layout decoder (uniform across layers)."""
    layers: int
    heads: int            # query heads
    kv_heads: int
    intermediate: int
    hidden: int

    @classmethod
    def of(cls, config) -> "ModelShape":
        from harness.surgery import head_layout

        n_q, n_kv, _ = head_layout(config)
        return cls(int(config.num_hidden_layers), int(n_q), int(n_kv), int(config.intermediate_size),
                   int(config.hidden_size))

    def describe(self) -> dict:
        return asdict(self)

    def check_reachable(self, base: "ModelShape", structures: Iterable[str], head_granularity: str) -> None:
        """Raise ValueError when masks over `structures` cannot reach this shape from `base`."""
        structures = set(structures)
        fixed = {"layers": ("layers",), "heads": ("heads", "kv_heads"), "intermediate": ("intermediate",),
                 "hidden": ("hidden",)}
        for s, fields in fixed.items():
            for f in fields:
                if s not in structures and getattr(self, f) != getattr(base, f):
                    raise ValueError(f"target {f}={getattr(self, f)} differs from the model's "
                                     f"{getattr(base, f)} but {s} are not masked")
                if not 0 < getattr(self, f) <= getattr(base, f):
                    raise ValueError(f"target {f}={getattr(self, f)} must be in 1..{getattr(base, f)}")
        group = base.heads // base.kv_heads
        if head_granularity == "query":
            if self.kv_heads != base.kv_heads or self.heads % self.kv_heads:
                raise ValueError(f"query-head masks keep every KV group ({base.kv_heads}) and the same number "
                                 f"of query heads in each: target heads={self.heads}, kv_heads={self.kv_heads}")
        elif head_granularity == "kv_group":
            if self.heads != self.kv_heads * group:
                raise ValueError(f"KV-group masks keep whole groups of {group} query heads: target heads="
                                 f"{self.heads} != kv_heads {self.kv_heads} x {group}")
        else:
            raise ValueError(f"head granularity must be one of {HEAD_GRANULARITIES}, got {head_granularity!r}")
        if self.hidden % self.heads:
            # transformers' LlamaConfig rejects hidden_size % num_attention_heads != 0 on from_pretrained
            raise ValueError(f"target hidden {self.hidden} must be a multiple of heads {self.heads}")


def param_count(config, layers, heads, kv_heads, intermediate, hidden):
    """Parameters of a LLaMA-layout model `config` with the given (possibly fractional, possibly
    per-layer tensor) widths: `layers` a count or per-layer weights [L] (0/1 when hard), heads /
    kv_heads / intermediate a number or per-layer [L], hidden a number. Integers give exactly
    harness.surgery.llama_param_count; expected counts give the differentiable expected size."""
    from harness.surgery import QKV_BIAS_MODEL_TYPES, head_layout

    _, _, hd = head_layout(config)
    d = hidden
    attn = d * heads * hd + 2 * d * kv_heads * hd + heads * hd * d
    if getattr(config, "attention_bias", False):
        attn = attn + heads * hd + 2 * kv_heads * hd + d
    elif getattr(config, "model_type", None) in QKV_BIAS_MODEL_TYPES:
        attn = attn + heads * hd + 2 * kv_heads * hd
    mlp = 3 * d * intermediate + ((2 * intermediate + d) if getattr(config, "mlp_bias", False) else 0)
    per_layer = attn + mlp + 2 * d                 # [] or [L]
    if isinstance(layers, torch.Tensor) and layers.dim() == 1:
        blocks = (layers * per_layer).sum()             # per-layer gate weights [L]
    elif isinstance(per_layer, torch.Tensor) and per_layer.dim() == 1:
        raise ValueError("per-layer widths need per-layer gate weights [L], not a layer count")
    else:
        blocks = layers * per_layer
    emb = config.vocab_size * d * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return emb + d + blocks


class StructureMasks(nn.Module):
    """Hard-concrete masks over the structures of one LLaMA-layout decoder, applied by hooks.

    One sample of every mask is drawn per model forward (a pre-hook on the model), shared by the
    whole batch, as in the reference. `train()` samples; `eval()` uses the deterministic masks
    (`eval_shape` set: exactly that shape's counts, else each row's rounded expected count)."""

    def __init__(self, model: nn.Module, adapter, structures: Iterable[str] = STRUCTURES,
                 head_granularity: str = "query", init_log_alpha: float = 5.0, init_keep: float | None = None,
                 temperature: float = 2 / 3, limits: tuple[float, float] = (-0.1, 1.1), seed: int = 0):
        super().__init__()
        from harness.surgery import head_layout

        structures = tuple(structures)
        bad = [s for s in structures if s not in STRUCTURES]
        if bad or not structures:
            raise ValueError(f"structures must be a non-empty subset of {STRUCTURES}, got {structures}")
        if head_granularity not in HEAD_GRANULARITIES:
            raise ValueError(f"head granularity must be one of {HEAD_GRANULARITIES}, got {head_granularity!r}")
        if not adapter.supports_surgery:
            raise ValueError(f"structure masks need the LLaMA layout: {adapter.width_blocker}")
        cfg = model.config
        self.base = ModelShape.of(cfg)
        n_q, n_kv, self.head_dim = head_layout(cfg)
        self.group = n_q // n_kv
        self.structures = structures
        self.head_granularity = head_granularity
        self.config = cfg
        L, F, D = self.base.layers, self.base.intermediate, self.base.hidden
        shapes = {"layers": (L,), "intermediate": (L, F), "hidden": (D,),
                  "heads": (L, n_kv, self.group) if head_granularity == "query" else (L, n_kv)}
        gen = torch.Generator().manual_seed(int(seed))
        dev = next(model.parameters()).device
        self.masks = nn.ModuleDict({
            s: HardConcrete(shapes[s], init_keep=init_keep, init_log_alpha=init_log_alpha,
                            temperature=temperature, limits=limits, generator=gen).to(dev)
            for s in structures})
        self.eval_shape: ModelShape | None = None
        self._z: dict[str, torch.Tensor] = {}
        self._model = [model]          # a list: not registered as a submodule (its params are not ours)
        self._adapter = adapter
        self._handles: list = []
        self._install(model, adapter)

    # -- hooks --------------------------------------------------------------------------------------
    def _install(self, model: nn.Module, adapter) -> None:
        self._handles.append(model.register_forward_pre_hook(lambda _m, _a: self._draw()))
        if "hidden" in self.masks:
            self._handles.append(adapter.embedding(model).register_forward_hook(
                lambda _m, _a, out: out * self._z["hidden"]))                       # [b, s, D] * [D]
        for i, block in enumerate(adapter.blocks(model)):
            attn = adapter.attention(block)
            o_proj = getattr(attn, adapter.attn_output)
            down = getattr(adapter.mlp_module(block), adapter.mlp_output)
            if "heads" in self.masks:
                self._handles.append(o_proj.register_forward_pre_hook(
                    lambda _m, args, i=i: (self._head_input(args[0], i),) + tuple(args[1:])))
            if "intermediate" in self.masks:
                self._handles.append(down.register_forward_pre_hook(
                    lambda _m, args, i=i: (args[0] * self._z["intermediate"][i],) + tuple(args[1:])))  # [b, s, F]
            for lin in (o_proj, down):
                self._handles.append(lin.register_forward_hook(lambda _m, _a, out, i=i: self._output(out, i)))

    def _head_input(self, x: torch.Tensor, i: int) -> torch.Tensor:
        z = self._z["heads"][i]                                   # [n_kv, group] or [n_kv]
        if z.dim() == 1:
            z = z.unsqueeze(-1).expand(-1, self.group)            # a KV group's query heads move together
        b, s, _ = x.shape
        x = x.view(b, s, z.numel(), self.head_dim) * z.reshape(-1, 1)   # [b, s, n_q, head_dim]
        return x.reshape(b, s, -1)

    def _output(self, out: torch.Tensor, i: int) -> torch.Tensor:
        if "layers" in self.masks:
            out = out * self._z["layers"][i]
        if "hidden" in self.masks:
            out = out * self._z["hidden"]                         # [b, s, D] * [D]
        return out

    def _draw(self) -> None:
        for m in self.masks.values():
            m.constrain()
        if self.training:
            self._z = {s: m.sample() for s, m in self.masks.items()}
        else:
            self._z = self.deterministic()

    def remove(self) -> None:
        """Take the hooks out: the model computes as if unmasked again."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- counts and sizes -----------------------------------------------------------------------------
    def _keep_counts(self, shape: ModelShape) -> dict[str, int]:
        heads = shape.heads // shape.kv_heads if self.head_granularity == "query" else shape.kv_heads
        return {"layers": shape.layers, "heads": heads, "intermediate": shape.intermediate, "hidden": shape.hidden}

    def deterministic(self, shape: ModelShape | None = None) -> dict[str, torch.Tensor]:
        """Eval masks: exactly `shape` (or self.eval_shape) when given, else rounded expected counts."""
        shape = shape or self.eval_shape
        keep = self._keep_counts(shape) if shape is not None else {}
        return {s: m.deterministic(keep.get(s)) for s, m in self.masks.items()}

    def expected_counts(self) -> dict[str, torch.Tensor]:
        """Differentiable expected kept units: layers [] , heads [L] (query heads), kv_heads [L],
        intermediate [L], hidden []; unmasked structures give the model's own counts."""
        b = self.base
        L = b.layers
        out = {}
        like = next(iter(self.masks.values())).log_alpha
        full = lambda v: torch.full((L,), float(v), dtype=like.dtype, device=like.device)  # noqa: E731
        out["layers"] = self.masks["layers"].expected_count() if "layers" in self.masks else like.new_tensor(float(L))
        if "heads" in self.masks:
            p = self.masks["heads"].prob_nonzero()
            if self.head_granularity == "query":
                out["heads"] = p.sum((-1, -2))                 # [L]
                out["kv_heads"] = full(b.kv_heads)
            else:
                out["kv_heads"] = p.sum(-1)                    # [L]
                out["heads"] = out["kv_heads"] * self.group
        else:
            out["heads"], out["kv_heads"] = full(b.heads), full(b.kv_heads)
        out["intermediate"] = (self.masks["intermediate"].expected_count() if "intermediate" in self.masks
                               else full(b.intermediate))
        out["hidden"] = self.masks["hidden"].expected_count() if "hidden" in self.masks else like.new_tensor(float(b.hidden))
        return out

    def expected_params(self) -> torch.Tensor:
        """Expected parameter count (scalar, differentiable): each layer weighted by its gate's
        P(open), its widths by their expected counts, every matrix by the expected hidden width (the
        reference's outer product of hidden and head / intermediate scores)."""
        c = self.expected_counts()
        layers = (self.masks["layers"].prob_nonzero() if "layers" in self.masks
                  else torch.ones_like(c["intermediate"]))                     # [L] gate weights
        return param_count(self.config, layers, c["heads"], c["kv_heads"], c["intermediate"], c["hidden"])

    def expected_sparsity(self) -> dict[str, torch.Tensor]:
        """1 - expected kept / base per masked structure ([L] for per-layer ones, [] otherwise)."""
        c = self.expected_counts()
        b = self.base
        base = {"layers": b.layers, "heads": b.heads, "intermediate": b.intermediate, "hidden": b.hidden}
        return {s: 1 - c[s] / base[s] for s in self.structures}

    def target_sparsity(self, shape: ModelShape) -> dict[str, float]:
        b = self.base
        return {"layers": 1 - shape.layers / b.layers, "heads": 1 - shape.heads / b.heads,
                "intermediate": 1 - shape.intermediate / b.intermediate, "hidden": 1 - shape.hidden / b.hidden}

    # -- hardening ------------------------------------------------------------------------------------
    def hard_keep(self, shape: ModelShape) -> dict:
        """Exact keep indices for `shape` (ascending):
          layers        [L'] original block indices
          kv_groups     per original block, the kept KV groups
          query_heads   per original block, per kept group, the kept query heads (0..group-1)
          intermediate  per original block, the kept MLP channels
          hidden        [D'] residual channels"""
        shape.check_reachable(self.base, self.structures, self.head_granularity)
        b = self.base
        L = b.layers
        keep = self._keep_counts(shape)
        hard = {s: m.harden(keep[s]) for s, m in self.masks.items()}
        idx = lambda mask: torch.nonzero(mask, as_tuple=False).flatten().tolist()  # noqa: E731
        out: dict = {"layers": idx(hard["layers"]) if "layers" in hard else list(range(L))}
        if "heads" in hard and self.head_granularity == "query":
            out["kv_groups"] = [list(range(b.kv_heads))] * L
            out["query_heads"] = [[idx(hard["heads"][i, j]) for j in range(b.kv_heads)] for i in range(L)]
        elif "heads" in hard:
            out["kv_groups"] = [idx(hard["heads"][i]) for i in range(L)]
            out["query_heads"] = [[list(range(self.group))] * shape.kv_heads for _ in range(L)]
        else:
            out["kv_groups"] = [list(range(b.kv_heads))] * L
            out["query_heads"] = [[list(range(self.group))] * b.kv_heads for _ in range(L)]
        out["intermediate"] = ([idx(hard["intermediate"][i]) for i in range(L)] if "intermediate" in hard
                               else [list(range(b.intermediate))] * L)
        out["hidden"] = idx(hard["hidden"]) if "hidden" in hard else list(range(b.hidden))
        return out

    @torch.no_grad()
    def prune(self, shape: ModelShape) -> dict:
        """Make the masks hard at `shape` and cut the model to it: the deterministic mask values of
        the kept units are folded into the weights, the hooks removed, then harness.surgery removes
        blocks, heads, MLP channels and hidden channels. The pruned model computes what the masked
        model computes in eval mode with `eval_shape = shape`. Returns the keep indices."""
        keep = self.hard_keep(shape)
        z = self.deterministic(shape)
        self.remove()
        self._fold(z)
        self._cut(shape, keep, z)
        return keep

    def _fold(self, z: dict[str, torch.Tensor]) -> None:
        """Multiply the mask values into the weights the hooks scale: o_proj columns (heads),
        down_proj columns (intermediate), o_proj / down_proj rows (layers, hidden), embedding
        columns (hidden; a tied head's final norm divides them back out)."""
        model, adapter = self._model[0], self._adapter
        hid = z.get("hidden")                                        # [D]
        for i, block in enumerate(adapter.blocks(model)):
            o_proj = getattr(adapter.attention(block), adapter.attn_output)
            down = getattr(adapter.mlp_module(block), adapter.mlp_output)
            if "heads" in z:
                zh = z["heads"][i]
                zh = zh.unsqueeze(-1).expand(-1, self.group) if zh.dim() == 1 else zh   # [n_kv, group]
                o_proj.weight.mul_(zh.reshape(-1).repeat_interleave(self.head_dim).to(o_proj.weight))
            if "intermediate" in z:
                down.weight.mul_(z["intermediate"][i].to(down.weight))
            row = torch.ones(o_proj.out_features, dtype=o_proj.weight.dtype, device=o_proj.weight.device)  # [D]
            if "layers" in z:
                row = row * z["layers"][i]
            if hid is not None:
                row = row * hid.to(row)
            for lin in (o_proj, down):
                lin.weight.mul_(row.unsqueeze(1))
                if lin.bias is not None:
                    lin.bias.mul_(row)
        if hid is not None:
            emb, head = adapter.embedding(model), adapter.head(model)
            tied = head.weight is emb.weight
            emb.weight.mul_(hid.to(emb.weight))          # the embedding hook's scaling, on its columns
            if tied:
                # the tied head now reads scaled columns: the final norm divides them back out (kept
                # channels have hid > 0; the others are cut)
                final = adapter._get(model, adapter.final_norm)
                final.weight.div_(torch.where(hid > 0, hid, torch.ones_like(hid)).to(final.weight))

    def _cut(self, shape: ModelShape, keep: dict, z: dict) -> None:
        """Physical surgery: widths first (keep indices are per original block), blocks last."""
        from harness import surgery

        model, adapter = self._model[0], self._adapter
        for i, block in enumerate(adapter.blocks(model)):
            if "heads" in z:
                surgery.prune_heads(block, adapter, self.head_dim, self.base.kv_heads, keep["kv_groups"][i],
                                    keep["query_heads"][i])
            if "intermediate" in z:
                surgery.prune_mlp_channels(block, adapter, keep["intermediate"][i])
        cfg = model.config
        if "heads" in z:
            surgery.set_head_config(cfg, shape.heads, shape.kv_heads, self.head_dim)
        if "intermediate" in z:
            cfg.intermediate_size = shape.intermediate
        if "hidden" in z and shape.hidden < self.base.hidden:
            surgery.prune_hidden(model, adapter, keep["hidden"])
        if "layers" in z and shape.layers < self.base.layers:
            surgery.drop_blocks(model, adapter, [i for i in range(self.base.layers) if i not in set(keep["layers"])])


# -------------------------------------------------------------------------------------------------

def warmup_target(final: float, step: int, warmup_steps: int, start: float = 0.0) -> float:
    """Target sparsity at `step`: linear from `start` to `final` over `warmup_steps` (reference
    get_target_sparsity), `final` from then on."""
    if warmup_steps <= 0:
        return final
    return start + (final - start) * min(1.0, step / warmup_steps)


class Lagrangian(nn.Module):
    """lambda1_s * (e_s - t_s) + lambda2_s * (e_s - t_s)^2 for each structure s, averaged over its
    layers and summed over structures; lambdas start at 0 and are maximised."""

    def __init__(self, structures: Iterable[str]):
        super().__init__()
        self.structures = tuple(structures)
        self.lambdas = nn.ParameterDict({f"{s}_{k}": nn.Parameter(torch.zeros(())) for s in self.structures
                                         for k in (1, 2)})

    def forward(self, expected: Mapping[str, torch.Tensor], target: Mapping[str, float]) -> torch.Tensor:
        loss = 0.0
        for s in self.structures:
            gap = expected[s] - float(target[s])                 # [L] or []
            loss = loss + (self.lambdas[f"{s}_1"] * gap + self.lambdas[f"{s}_2"] * gap * gap).mean()
        return loss


def constraint_parameters(masks: nn.Module, lagrangian: Lagrangian) -> dict[str, nn.Parameter]:
    """The masks' and the lambdas' parameters, named "masks.<name>" and "lagrangian.<name>" for
    harness.recovery.train (whose `groups` picks optimizer options by name: `constraint_options`)."""
    return ({f"masks.{n}": p for n, p in masks.named_parameters()}
            | {f"lagrangian.{n}": p for n, p in lagrangian.named_parameters()})


def constraint_options(name: str, lr: float) -> dict:
    """Optimizer options of a `constraint_parameters` entry: masks and lambdas at `lr`, the lambdas
    maximised (the references: lag_lr for the masks, -lag_lr for the lambdas)."""
    return {"lr": lr, "maximize": True} if name.startswith("lagrangian.") else {"lr": lr}
