"""Structural surgery on every tiny family: removing units gives the logits of the model with those
units zeroed (masked == pruned), and the pruned model reloads with plain from_pretrained."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import surgery
from harness.adapters import adapter_for
from harness.experts import routed_experts
from tests.conftest import MOE_FAMILIES, TINY_FAMILIES, make_tiny_family

TOL = 1e-5
# families where head / MLP-channel surgery applies (adapter.supports_surgery), and of those the
# ones whose stream norms are RMS norms (hidden channels)
WIDTH_FAMILIES = ["cohere", "gemma2", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"]
HIDDEN_FAMILIES = ["gemma2", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"]


def _ids(seq=40):   # above the tiny configs' sliding window (16)
    return torch.randint(0, 250, (2, seq), generator=torch.Generator().manual_seed(0))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _reloaded(model, tmp_path):
    model.save_pretrained(tmp_path, safe_serialization=True)
    return AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()


def _zero_writers(block, ad):
    """Zero every linear writing the residual stream (attention / MLP / expert outputs): the block
    becomes the identity."""
    with torch.no_grad():
        for name, lin in ad.linears(block).items():
            if not ad.reads_stream(name) and lin.out_features == block_width(block, ad):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()


def block_width(block, ad):
    return ad.linears(block)[f"{ad.attn}.{ad.attn_output}"].out_features


def test_every_family_is_covered():
    assert set(WIDTH_FAMILIES) <= set(TINY_FAMILIES)
    for family in TINY_FAMILIES:
        ad = adapter_for(make_tiny_family(family)[0])
        assert ad.supports_surgery == (family in WIDTH_FAMILIES), (family, ad.width_blocker)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_drop_blocks_equals_identity_blocks_and_reloads(family, tmp_path):
    model, _ = make_tiny_family(family)
    ad = adapter_for(model)
    n = len(ad.blocks(model))
    types = list(getattr(model.config, "layer_types", None) or [])
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    drop = sorted({n - 2, full[0]}) if full and full[0] != n - 2 else [1, n - 2]   # a global layer goes too
    masked = copy.deepcopy(model)
    for i in drop:
        _zero_writers(ad.blocks(masked)[i], ad)
    ids = _ids()
    kept = surgery.drop_blocks(model, ad, drop)
    assert model.config.num_hidden_layers == n - len(drop) == len(ad.blocks(model))
    if types:   # the per-layer kinds follow the kept blocks (sliding vs global)
        assert model.config.layer_types == [types[i] for i in kept]
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    back = _reloaded(model, tmp_path)
    assert (_logits(back, ids) - _logits(model, ids)).abs().max() < TOL


@pytest.mark.parametrize("family", WIDTH_FAMILIES)
def test_heads_and_mlp_channels_equal_zeroed_units_and_reload(family, tmp_path):
    model, _ = make_tiny_family(family)
    ad = adapter_for(model)
    n_q, n_kv, hd = surgery.head_layout(model.config)
    group = n_q // n_kv
    f = model.config.intermediate_size
    keep_q = [[j % group] for j in range(n_kv)]          # one query head per KV group (GQA)
    kept_heads = [j * group + hs[0] for j, hs in enumerate(keep_q)]
    keep_f = list(range(0, f, 2))
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for blk in ad.blocks(masked):
            o = ad.linears(blk)[f"{ad.attn}.{ad.attn_output}"]
            down = ad.linears(blk)[f"{ad.mlp}.{ad.mlp_output}"]
            for h in range(n_q):
                if h not in kept_heads:
                    o.weight[:, h * hd:(h + 1) * hd] = 0
            down.weight[:, [c for c in range(f) if c not in keep_f]] = 0
    for blk in ad.blocks(model):
        surgery.prune_heads(blk, ad, hd, n_kv, list(range(n_kv)), keep_q)
        surgery.prune_mlp_channels(blk, ad, keep_f)
    surgery.set_head_config(model.config, len(kept_heads), n_kv, hd)
    model.config.intermediate_size = len(keep_f)
    ids = _ids()
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    back = _reloaded(model, tmp_path)
    assert (_logits(back, ids) - _logits(model, ids)).abs().max() < TOL


@pytest.mark.parametrize("family", HIDDEN_FAMILIES)
def test_hidden_channels_equal_zeroed_channels_and_reload(family, tmp_path):
    """Gemma: (1 + w) norms, pre/post feed-forward norms and the sqrt(hidden) embedding scale."""
    model, _ = make_tiny_family(family)
    ad = adapter_for(model)
    d = model.config.hidden_size
    keep = [c for c in range(d) if c % 4 != 1]      # 48 of 64: a multiple of the 4 query heads
    drop = [c for c in range(d) if c not in keep]
    masked = copy.deepcopy(model)
    with torch.no_grad():   # the dropped channels stay zero in the residual stream
        ad.embedding(masked).weight[:, drop] = 0
        for blk in ad.blocks(masked):
            for name, lin in ad.linears(blk).items():
                if not ad.reads_stream(name):
                    lin.weight[drop, :] = 0
                    if lin.bias is not None:
                        lin.bias[drop] = 0
    surgery.prune_hidden(model, ad, keep)
    ids = _ids()
    assert model.config.hidden_size == len(keep)
    # eps of the per-head q/k norms (Qwen3, Gemma-3) follows rms_norm_eps: a 1e-6-level difference
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < 1e-4
    back = _reloaded(model, tmp_path)
    assert (_logits(back, ids) - _logits(model, ids)).abs().max() < TOL


def test_hidden_channels_refused_with_layernorm():
    model, _ = make_tiny_family("cohere")
    with pytest.raises(surgery.SurgeryError, match="mean-centred LayerNorms"):
        surgery.prune_hidden(model, adapter_for(model), range(48))


def test_sublayer_drop_with_post_norms_equals_zeroed_sublayer():
    """Gemma-2 normalises sublayer outputs: a dropped attention (zero output) passes the residual."""
    model, _ = make_tiny_family("gemma2")
    ad = adapter_for(model)
    masked = copy.deepcopy(model)
    with torch.no_grad():
        ad.linears(ad.blocks(masked)[1])["self_attn.o_proj"].weight.zero_()
        ad.linears(ad.blocks(masked)[2])["mlp.down_proj"].weight.zero_()
    surgery.drop_sublayer(model, ad, 1, "attn")
    surgery.drop_sublayer(model, ad, 2, "mlp")
    ids = _ids()
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    cohere, _ = make_tiny_family("cohere")
    with pytest.raises(surgery.SurgeryError, match="parallel"):
        surgery.drop_sublayer(cohere, adapter_for(cohere), 0, "attn")


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_unfused_experts_keep_the_forward_and_the_checkpoint_layout(family, tmp_path):
    from harness.models import build_random_init
    from tests.conftest import tiny_family_config

    source = tiny_family_config(family)["source"]
    fused, _ = build_random_init(source["family"], source["config"], 0)
    model, _ = make_tiny_family(family)
    ids = _ids()
    assert (_logits(model, ids) - _logits(fused.eval(), ids)).abs().max() < TOL
    assert set(model.state_dict()) == set(fused.state_dict())
    back = _reloaded(model, tmp_path)
    assert (_logits(back, ids) - _logits(model, ids)).abs().max() < TOL
    assert routed_experts(adapter_for(model).blocks(model)[0]) is not None
    assert set(MOE_FAMILIES) <= set(TINY_FAMILIES)
