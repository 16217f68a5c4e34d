"""Model-family adapters: the only place that knows where a family keeps its blocks and linears.

Methods and the block loop talk to an adapter, never to a concrete architecture, so one method file
serves every family (no per-model copies). Adding a family = one `FamilyAdapter(...)` entry plus a
tiny-config row in tests/unit/test_adapters.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class FamilyAdapter:
    """Attribute paths of one decoder-only family (dotted, relative to the CausalLM object)."""

    family: str
    model_types: tuple[str, ...]
    layers: str                      # ModuleList of decoder blocks
    embed: str                       # token embedding
    final_norm: str
    lm_head: str
    attn: str                        # attention sublayer inside a block
    mlp: str | None                  # MLP sublayer inside a block ("" if the MLP linears sit on the block)
    attn_inputs: tuple[str, ...]     # linears reading the attention input (share one input)
    attn_output: str
    mlp_inputs: tuple[str, ...]      # linears reading the MLP input (share one input)
    mlp_output: str
    attn_norm: str                   # norm before attention
    mlp_norm: str                    # norm before the MLP
    gated_mlp: bool = True
    # Structural surgery (harness.surgery) is written for the LLaMA layout (RMSNorm, GQA, gated MLP).
    supports_surgery: bool = False

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

    def _qualified(self, sub: str, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{sub}.{n}" if sub else n for n in names)

    def input_groups(self) -> list[tuple[str, ...]]:
        """Linears (block-relative names) grouped by shared input, in forward order.
        One statistic (norm, Hessian) per group serves all its members."""
        return [
            self._qualified(self.attn, self.attn_inputs),
            self._qualified(self.attn, (self.attn_output,)),
            self._qualified(self.mlp or "", self.mlp_inputs),
            self._qualified(self.mlp or "", (self.mlp_output,)),
        ]

    def linear_names(self) -> list[str]:
        return [name for group in self.input_groups() for name in group]

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Block-relative name -> linear; a sublayer dropped by harness.surgery has none."""
        out = {}
        for name in self.linear_names():
            try:
                out[name] = self._get(block, name)
            except AttributeError:
                continue
        return out

    def embedding(self, model: nn.Module) -> nn.Embedding:
        return self._get(model, self.embed)

    def head(self, model: nn.Module) -> nn.Linear:
        return self._get(model, self.lm_head)

    def block_output(self, output):
        """Decoder layers return a tensor (transformers>=5 LLaMA) or a tuple (older/other families)."""
        return output[0] if isinstance(output, (tuple, list)) else output


_LLAMA_LIKE = dict(
    layers="model.layers", embed="model.embed_tokens", final_norm="model.norm", lm_head="lm_head",
    attn="self_attn", mlp="mlp", attn_inputs=("q_proj", "k_proj", "v_proj"), attn_output="o_proj",
    mlp_inputs=("gate_proj", "up_proj"), mlp_output="down_proj",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", gated_mlp=True,
    supports_surgery=True,
)

ADAPTERS: dict[str, FamilyAdapter] = {
    "llama": FamilyAdapter(family="llama", model_types=("llama", "mistral", "qwen2"), **_LLAMA_LIKE),
    "opt": FamilyAdapter(
        family="opt", model_types=("opt",), layers="model.decoder.layers",
        embed="model.decoder.embed_tokens", final_norm="model.decoder.final_layer_norm",
        lm_head="lm_head", attn="self_attn", mlp="", attn_inputs=("q_proj", "k_proj", "v_proj"),
        attn_output="out_proj", mlp_inputs=("fc1",), mlp_output="fc2",
        attn_norm="self_attn_layer_norm", mlp_norm="final_layer_norm", gated_mlp=False,
    ),
}


def adapter_for(model: nn.Module) -> FamilyAdapter:
    model_type = getattr(model.config, "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    known = sorted(t for a in ADAPTERS.values() for t in a.model_types)
    raise ValueError(f"no family adapter for model_type={model_type!r}; supported: {', '.join(known)}")
