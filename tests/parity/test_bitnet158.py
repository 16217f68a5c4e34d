"""BitNet b1.58 against an independent minimal BitLinear written from the reference's training FAQ
(microsoft/unilm bitnet): weight_quant = (w * (1 / mean|w|)).round().clamp(-1, 1) / (1 / mean|w|),
activation_quant = (x * (127 / max|x| per token)).round().clamp(-128, 127) / that scale, both applied
in the linear's forward. Not prunebench's code: plain functions and a monkey-patched forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.targets import Target
from methods.registry import build_method
from tests.parity.tiny import context, model_pair


def _weight_quant(w):
    scale = 1.0 / w.abs().mean().clamp_(min=1e-5)
    return (w * scale).round().clamp_(-1, 1) / scale


def _activation_quant(x):
    scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    return (x * scale).round().clamp_(-128, 127) / scale


def _bitlinear(ref):
    """Every block linear of `ref` computes F.linear(activation_quant(x), weight_quant(w))."""
    for name, mod in ref.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
            w = mod.weight.detach().clone()
            mod.forward = lambda x, m=mod, w=w: F.linear(_activation_quant(x), _weight_quant(w), m.bias)


def test_bitnet158_equals_the_reference_bitlinear():
    ours, ref = model_pair(seed=3)
    target = Target("ternary", "ternary", 0.0, bits=1.58)
    build_method("bitnet158").prune(ours, context(ours, target))
    _bitlinear(ref)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = ours(input_ids=ids).logits, ref(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, mod in ref.named_modules():   # the stored weights are the reference's quantised ones
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
            want_w = _weight_quant(mod.forward.__defaults__[1])
            torch.testing.assert_close(ours.get_submodule(name).weight, want_w, rtol=0, atol=1e-7)
