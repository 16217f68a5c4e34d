"""BitNet b1.58: ternary block linears (absmean scale) with 8-bit per-token activations.

Paper: Ma et al., "The Era of 1-bit LLMs: All Large Language Models are in 1.58 Bits" (2024),
arXiv:2402.17764; training tips in the reference's FAQ (microsoft/unilm, bitnet/).
Reference: BitLinear of the FAQ: per-tensor scale mean|W| (clamped at 1e-5),
W~ = RoundClip(W / scale, -1, 1); activations x * 127 / max|x| per token, rounded, clamped to
[-128, 127]; both through a straight-through estimator x + (q(x) - x).detach() in training.
Here: the pruning step ternarises the stored weights and hooks the activations (harness/quant.py);
training is the recovery axis, `recovery=qat` (harness/recovery/qat.py), from the pre-trained latent
weights, or from a random init for the from-scratch comparison (`suite=bitnet_scratch`).
The ternary zeros are the sparsity the record reports; bits per weight are measured on the stored
weights (log2 of the distinct values plus 16 bits per scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from methods.base import Method
from methods.registry import register
from methods.tags import Tags


@register
@dataclass
class BitNet158(Method):
    name: ClassVar[str] = "bitnet158"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Ma et al. 2024, arXiv:2402.17764"
    listed: ClassVar[str] = "https://arxiv.org/abs/2402.17764"
    reference: ClassVar[str] = "https://github.com/microsoft/unilm/tree/master/bitnet (The-Era-of-1-bit-LLMs__Training_Tips_Code_FAQ.pdf: BitLinear)"
    differences: ClassVar[str] = (
        "applied to a pre-trained model's block linears (the paper trains from scratch; that comparison is "
        "suite=bitnet_scratch at a tiny scale); no extra RMSNorm inside BitLinear (the model's own pre-norms "
        "stay; o_proj/down_proj inputs are quantised un-normalised); embeddings, norms and the LM head stay in "
        "full precision as in the paper; the stored weight is s*W~ in the model's dtype (no packed 2-bit kernel), "
        "so speed and memory are not the paper's; QAT budget (steps, lr, tokens) is CPU-small here, the paper's "
        "is 100B tokens with a two-stage lr/weight-decay schedule (set recovery.steps/lr/tokens to scale)")
    tags: ClassVar[Tags] = Tags("Unstructured", "Trainable", "Sparsity", "Large", "Scratch", "Update",
                                qualifier="ternary weights + 8-bit activations")
    patterns: ClassVar[frozenset[str]] = frozenset({"ternary"})
    needs_calibration: ClassVar[bool] = False
    updates_weights: ClassVar[bool] = True   # weights are rewritten (rounded), not masked

    act_bits: int = 8                        # paper: 8-bit activations, per token (absmax)

    def __post_init__(self):
        if not 2 <= int(self.act_bits) <= 16:
            raise ValueError(f"bitnet158: act_bits must be in [2, 16], got {self.act_bits}")

    def prune(self, model, ctx) -> dict:
        from harness.quant import quantise_model

        names = quantise_model(model, ctx.adapter, int(self.act_bits))
        return {"quantised_linears": len(names), "weights": "ternary_absmean", "act_bits": int(self.act_bits)}
