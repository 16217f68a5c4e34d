"""Ternary weights and 8-bit activations for block linears (BitNet b1.58's BitLinear), shared by the
`bitnet158` method, the `qat` recovery, the measure stage and the loaders.

Weights: per-tensor absmean scale s = mean|W| (+ eps), W~ = RoundClip(W / s, -1, 1); the model
stores s * W~ (so every stored tensor takes exactly the three values {-s, 0, +s}, zeros are real
zeros that the sparsity measure counts, and plain from_pretrained reloads it).
Activations: per-token absmax to 8 bits, a forward pre-hook on each quantised linear (the forward
really changes; it is not weight rounding alone). The hook is not a weight, so the quantised linears
and the activation bits are written into the model's config (QUANT_KEY) and `apply_saved_quant`
re-installs the hooks after a reload (harness.export.load_saved, harness.surgery.load_pruned).
Training (QAT): the latent full-precision weight is a parametrization's `original`; the forward
sees s * W~ through a straight-through estimator, x + (q(x) - x).detach(), for weights and
activations alike; `end_qat` re-ternarises the trained latent weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

QUANT_KEY = "prunebench_quant"      # model.config entry: {"weights", "act_bits", "linears"}
EPS = 1e-5                          # the reference's clamp on both scales
SCALE_BITS = 16                     # one fp16/bf16 scale per tensor (the reference keeps it in high precision)


def absmean_ternary(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] -> (t [out, in] in {-1, 0, 1}, s scalar): w ~ s * t, s = mean|w|."""
    s = w.abs().mean().clamp(min=EPS)
    return (w / s).round().clamp(-1, 1), s


def absmax_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """x [..., in] quantised per token (last dim) to signed `bits` integers and scaled back."""
    qmax = 2 ** (bits - 1) - 1                                         # 127 for 8 bits
    scale = qmax / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)   # [..., 1]
    return (x * scale).round().clamp(-qmax - 1, qmax) / scale


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value q, gradient of the identity (straight-through estimator)."""
    return x + (q - x).detach()


class TernaryWeight(nn.Module):
    """Parametrization: the forward sees s * W~ of the latent weight; gradients reach the latent."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t, s = absmean_ternary(w.float())
        return ste(w, (t * s).to(w.dtype))


class ActQuant:
    """Forward pre-hook: the linear's input quantised per token to `bits` (STE while training)."""

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, module: nn.Module, args: tuple):
        x = args[0]                                                   # [batch, seq, in]
        q = absmax_per_token(x.float(), self.bits).to(x.dtype)
        return (ste(x, q), *args[1:])


def install_act_quant(lin: nn.Linear, bits: int) -> None:
    """One hook per linear (installing twice would quantise twice: harmless, but kept exact)."""
    if getattr(lin, "_prunebench_act_quant", None) is None:
        lin._prunebench_act_quant = lin.register_forward_pre_hook(ActQuant(bits))


@torch.no_grad()
def ternarise_(lin: nn.Linear) -> None:
    """Store s * W~ in place; the full-precision weight is kept aside (not saved) for QAT to start from."""
    w = lin.weight
    lin._prunebench_latent = w.detach().clone()
    t, s = absmean_ternary(w.float())
    w.copy_((t * s).to(w.dtype))


def linear_names(model: nn.Module, adapter) -> list[str]:
    """Full module names of the block linears, in model order."""
    ids = {id(lin) for block in adapter.blocks(model) for lin in adapter.linears(block).values()}
    return [name for name, mod in model.named_modules() if id(mod) in ids]


def quantise_model(model: nn.Module, adapter, act_bits: int) -> list[str]:
    """Ternarise every block linear, hook its activations, and write what a reload needs into the config."""
    names = linear_names(model, adapter)
    modules = dict(model.named_modules())
    for name in names:
        ternarise_(modules[name])
        install_act_quant(modules[name], act_bits)
    setattr(model.config, QUANT_KEY, {"weights": "ternary_absmean", "act_bits": int(act_bits), "linears": names})
    return names


def quant_spec(model: nn.Module) -> dict | None:
    return getattr(model.config, QUANT_KEY, None)


def apply_saved_quant(model: nn.Module) -> nn.Module:
    """After from_pretrained: the stored weights are already s * W~; re-install the activation hooks."""
    spec = quant_spec(model)
    if spec:
        modules = dict(model.named_modules())
        for name in spec["linears"]:
            install_act_quant(modules[name], int(spec["act_bits"]))
    return model


def begin_qat(model: nn.Module) -> list[str]:
    """Latent weights back to full precision (the pre-ternarisation weights when this process has them)
    and the ternary STE parametrization on each; returns the quantised linears' names."""
    spec = quant_spec(model) or {"linears": []}
    modules = dict(model.named_modules())
    for name in spec["linears"]:
        lin = modules[name]
        latent = getattr(lin, "_prunebench_latent", None)
        if latent is not None:
            with torch.no_grad():
                lin.weight.copy_(latent)
        parametrize.register_parametrization(lin, "weight", TernaryWeight())
    return list(spec["linears"])


def end_qat(model: nn.Module, names: list[str]) -> None:
    """Drop the parametrizations (the trained latent weights come back) and re-ternarise them."""
    modules = dict(model.named_modules())
    for name in names:
        lin = modules[name]
        parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
        ternarise_(lin)


@torch.no_grad()
def measure_bits(model: nn.Module, adapter) -> dict | None:
    """Bits per weight of the stored block linears, from the weights themselves: log2(distinct values)
    per weight plus SCALE_BITS per distinct non-zero magnitude (a scale). None for an unquantised model."""
    spec = quant_spec(model)
    if spec is None:
        return None
    total = level_bits = scale_bits = 0.0
    levels_max = 0
    for block in adapter.blocks(model):
        for lin in adapter.linears(block).values():
            w = lin.weight.detach()                                  # [out, in]
            levels = int(torch.unique(w).numel())
            scales = int(torch.unique(w.abs()[w != 0]).numel())
            total += w.numel()
            level_bits += w.numel() * math.log2(max(levels, 2))
            scale_bits += SCALE_BITS * scales
            levels_max = max(levels_max, levels)
    return {"bits_per_weight": (level_bits + scale_bits) / total, "bits_per_weight_levels": level_bits / total,
            "scale_bits": SCALE_BITS, "weight_levels_max": levels_max, "act_bits": int(spec["act_bits"]),
            "quantised_linears": len(spec["linears"])}


def check_bits(measured: dict | None, asked: float | None, tol: float = 0.01) -> None:
    """The bits per weight a target asks for (levels only: log2(3) for ternary) against the stored weights."""
    if asked is None:
        return
    got = None if measured is None else measured["bits_per_weight_levels"]
    if got is None or abs(got - float(asked)) > tol:
        raise ValueError(f"target asks for {asked} bits per weight; the stored block linears give {got}")
