"""Encoder (BERT-family) support: the adapter, FLOPs accounting, masks and head/neuron surgery.

Encoder layers are post-norm: attention -> output dense -> LayerNorm(x + .), then FFN
(fc1 -> act -> fc2) -> LayerNorm(x + .). A *sublayer* is one of them; its prunable units are the
attention heads (q/k/v rows and output-dense columns of the head) and the FFN neurons (fc1 row, fc2
column). Layouts are data (ENCODER_LAYOUTS, keyed by the config's model_type); BERT, RoBERTa and
ELECTRA share one. Models load as sequence classifiers (harness.models.auto_model_class).

FLOPs follow the KPrune reference's accounting: per head 3*2*d*dh*L (q/k/v) + 2*2*L^2*dh
(scores and weighted sum) + 2*dh*L*d (output), per neuron 2*2*L*d, at the task's mean sequence
length L; embeddings, norms, biases, activations and the classifier are not counted. A unit is
*live* when its output columns are not all zero (masking = zeroing those columns; surgery removes
them), so FLOPs are measured on the weights, masked or physically pruned alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderLayout:
    """Block-relative paths of one encoder layer's parts."""
    attn: str = "attention.self"
    q: str = "attention.self.query"
    k: str = "attention.self.key"
    v: str = "attention.self.value"
    o: str = "attention.output.dense"
    attn_norm: str = "attention.output.LayerNorm"
    fc1: str = "intermediate.dense"
    fc2: str = "output.dense"
    ffn_norm: str = "output.LayerNorm"
    layers: str = "encoder.layer"          # relative to the base model (model.base_model_prefix)


BERT_LAYOUT = EncoderLayout()
ENCODER_LAYOUTS: dict[str, EncoderLayout] = {"bert": BERT_LAYOUT, "roberta": BERT_LAYOUT, "electra": BERT_LAYOUT}


def is_encoder(config) -> bool:
    return getattr(config, "model_type", None) in ENCODER_LAYOUTS


def _get(root: nn.Module, path: str) -> nn.Module:
    for part in filter(None, path.split(".")):
        root = getattr(root, part)
    return root


@dataclass(frozen=True)
class EncoderAdapter:
    """Where a loaded encoder classifier keeps its parts (the FamilyAdapter calls measurement uses)."""
    family: str
    layers: str                  # ModuleList of layers, relative to the classifier model
    layout: EncoderLayout
    head_dim: int
    encoder: ClassVar[bool] = True
    width_blocker: ClassVar[str] = "encoder: heads and neurons are pruned by harness.encoders, not harness.surgery"
    supports_surgery: ClassVar[bool] = False
    moe: ClassVar[bool] = False

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers)

    def block_prefix(self, index: int) -> str:
        return f"{self.layers}.{index}"

    def part(self, block: nn.Module, name: str) -> nn.Module:
        return _get(block, getattr(self.layout, name))

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        lay = self.layout
        return {getattr(lay, n): self.part(block, n) for n in ("q", "k", "v", "o", "fc1", "fc2")}

    def input_groups(self, block: nn.Module | None = None) -> list[tuple[str, ...]]:
        lay = self.layout
        return [(lay.q, lay.k, lay.v), (lay.o,), (lay.fc1,), (lay.fc2,)]

    def embedding(self, model: nn.Module) -> nn.Embedding:
        return model.get_input_embeddings()

    def head(self, model: nn.Module) -> nn.Linear:
        """The classifier's last linear (BERT: classifier, RoBERTa/ELECTRA: classifier.out_proj)."""
        return [m for m in model.classifier.modules() if isinstance(m, nn.Linear)][-1]

    def block_output(self, output):
        return output[0] if isinstance(output, (tuple, list)) else output


def encoder_adapter(model: nn.Module) -> EncoderAdapter:
    config = model.config
    layout = ENCODER_LAYOUTS[config.model_type]
    layers = f"{model.base_model_prefix}.{layout.layers}"
    return EncoderAdapter(config.model_type, layers, layout, config.hidden_size // config.num_attention_heads)


def auto_model_class(config):
    """AutoModelForSequenceClassification for encoders, AutoModelForCausalLM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if is_encoder(config) else AutoModelForCausalLM


# ------------------------------------------------------------------------------------------ FLOPs
def unit_flops(seq_len: float, head_dim: int, hidden: int) -> tuple[float, float]:
    """(FLOPs of one head, FLOPs of one neuron) at sequence length seq_len (reference accounting)."""
    head = 3 * 2 * hidden * head_dim * seq_len + 2 * 2 * seq_len * seq_len * head_dim + 2 * head_dim * seq_len * hidden
    return float(head), float(2 * 2 * seq_len * hidden)


@torch.no_grad()
def live_units(model: nn.Module, adapter: EncoderAdapter) -> tuple[list[int], list[int]]:
    """(live heads per layer, live neurons per layer): units whose output columns are not all zero."""
    heads, neurons = [], []
    for block in adapter.blocks(model):
        o = adapter.part(block, "o").weight                         # [d, n_heads*dh]
        per_head = o.view(o.shape[0], -1, adapter.head_dim).abs().sum((0, 2))   # [n_heads]
        heads.append(int((per_head > 0).sum()))
        neurons.append(int((adapter.part(block, "fc2").weight.abs().sum(0) > 0).sum()))
    return heads, neurons


def encoder_flops(model: nn.Module, adapter: EncoderAdapter, seq_len: float) -> dict:
    """FLOPs of the live heads and neurons (and their counts per layer)."""
    heads, neurons = live_units(model, adapter)
    f_head, f_neuron = unit_flops(seq_len, adapter.head_dim, model.config.hidden_size)
    return {"flops": sum(heads) * f_head + sum(neurons) * f_neuron, "heads": heads, "neurons": neurons,
            "seq_len": seq_len, "flops_per_head": f_head, "flops_per_neuron": f_neuron}


# ------------------------------------------------------------------------------------ masks/surgery
def unit_columns(keep: torch.Tensor, width: int) -> torch.Tensor:
    """Unit keep mask [n_units] -> column keep mask [n_units*width]."""
    return keep.bool().repeat_interleave(width)


@torch.no_grad()
def mask_units(block: nn.Module, adapter: EncoderAdapter, sublayer: str, keep: torch.Tensor) -> None:
    """Zero the output columns of the units not kept (sublayer "attn": heads, "ffn": neurons)."""
    out = adapter.part(block, "o" if sublayer == "attn" else "fc2")
    cols = unit_columns(keep, adapter.head_dim if sublayer == "attn" else 1)
    out.weight[:, ~cols] = 0


def _shrink(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of `linear` keeping rows (dim 0: outputs) or columns (dim 1: inputs) at `index`."""
    w = linear.weight.index_select(dim, index)                      # [out', in] or [out, in']
    new = torch.nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=linear.bias is not None,
                                   dtype=w.dtype, device=w.device)
    new.weight.data.copy_(w)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias if dim == 1 else linear.bias.index_select(0, index))
    return new


def _set(block: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(_get(block, parent), leaf, module)


@torch.no_grad()
def remove_dead_units(model: nn.Module, adapter: EncoderAdapter) -> dict:
    """Physically remove every head and neuron whose output columns are zero (same outputs). A layer
    left without live heads keeps one zero head (a 0-head attention cannot reshape)."""
    lay, dh = adapter.layout, adapter.head_dim
    removed = {"heads": 0, "neurons": 0}
    for block in adapter.blocks(model):
        o = adapter.part(block, "o")
        alive = o.weight.view(o.weight.shape[0], -1, dh).abs().sum((0, 2)) > 0     # [n_heads]
        if not alive.any():
            alive[0] = True
        rows = unit_columns(alive, dh).nonzero().squeeze(1)
        for name in ("q", "k", "v"):
            _set(block, getattr(lay, name), _shrink(adapter.part(block, name), rows, 0))
        _set(block, lay.o, _shrink(o, rows, 1))
        attn = adapter.part(block, "attn")
        removed["heads"] += int((~alive).sum())
        attn.num_attention_heads = int(alive.sum())
        attn.all_head_size = attn.num_attention_heads * dh
        keep = (adapter.part(block, "fc2").weight.abs().sum(0) > 0).nonzero().squeeze(1)   # [F']
        removed["neurons"] += adapter.part(block, "fc2").weight.shape[1] - len(keep)
        _set(block, lay.fc1, _shrink(adapter.part(block, "fc1"), keep, 0))
        _set(block, lay.fc2, _shrink(adapter.part(block, "fc2"), keep, 1))
    return removed
