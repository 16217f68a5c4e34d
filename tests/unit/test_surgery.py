"""Structural surgery: removing units gives the same logits as zeroing them (masked == pruned),
configs stay consistent, parameter counts are exact, and pruned models save, reload and generate."""

from __future__ import annotations

import copy

import pytest
import torch

from harness import surgery
from harness.adapters import adapter_for
from tests.conftest import make_tiny

TOL = 1e-5


def _ids(seed=0, n=2, seq=24):
    return torch.randint(0, 250, (n, seq), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _tiny(**kw):
    # 6 query heads in 2 KV groups (GQA, group size 3), like SmolLM2's 9 in 3.
    cfg = dict(num_attention_heads=6, num_key_value_heads=2, hidden_size=48, head_dim=8)
    cfg.update(kw)
    model, tok = make_tiny("llama", **cfg)
    return model, tok, adapter_for(model)


def test_drop_blocks_equals_zeroed_blocks_and_reindexes():
    model, _, ad = _tiny()
    ids = _ids()
    masked = copy.deepcopy(model)
    for i in (1, 2):  # a block whose attention and MLP write zeros is the identity
        blk = ad.blocks(masked)[i]
        blk.self_attn.o_proj.weight.data.zero_()
        blk.mlp.down_proj.weight.data.zero_()
    kept = surgery.drop_blocks(model, ad, [1, 2])
    assert kept == [0, 3]
    assert model.config.num_hidden_layers == 2 and len(ad.blocks(model)) == 2
    assert [b.self_attn.layer_idx for b in ad.blocks(model)] == [0, 1]
    if getattr(model.config, "layer_types", None) is not None:
        assert len(model.config.layer_types) == 2
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL


@pytest.mark.parametrize("sublayer", ["attn", "mlp"])
def test_drop_sublayer_equals_zeroed_sublayer(sublayer):
    model, _, ad = _tiny()
    ids = _ids()
    masked = copy.deepcopy(model)
    out = "self_attn.o_proj" if sublayer == "attn" else "mlp.down_proj"
    ad._get(ad.blocks(masked)[0], out).weight.data.zero_()
    before = _count(model)
    surgery.drop_sublayer(model, ad, 0, sublayer)
    assert model.config.prunebench_dropped_sublayers[sublayer] == [0]
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    blk = ad.blocks(masked)[0]
    sub, norm = (blk.self_attn, blk.input_layernorm) if sublayer == "attn" else (blk.mlp, blk.post_attention_layernorm)
    removed = sum(p.numel() for p in sub.parameters()) + norm.weight.numel()
    assert before - _count(model) == removed


def test_prune_mlp_channels_equals_zeroed_channels_and_counts():
    model, _, ad = _tiny()
    ids = _ids()
    f = model.config.intermediate_size
    keep = list(range(0, f, 2))[: f // 2]
    masked = copy.deepcopy(model)
    drop = [c for c in range(f) if c not in keep]
    for blk in ad.blocks(masked):
        blk.mlp.down_proj.weight.data[:, drop] = 0
    for blk in ad.blocks(model):
        surgery.prune_mlp_channels(blk, ad, keep)
    model.config.intermediate_size = len(keep)
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    assert _count(model) == surgery.llama_param_count(model.config)
    assert _count(masked) - _count(model) == model.config.num_hidden_layers * 3 * model.config.hidden_size * len(drop)


@pytest.mark.parametrize("keep_kv,keep_q", [([0, 1], [[0, 2], [1, 2]]), ([1], [[0, 1, 2]])])
def test_prune_heads_gqa_equals_zeroed_heads(keep_kv, keep_q):
    model, _, ad = _tiny()
    ids = _ids()
    n_q, n_kv, hd = surgery.head_layout(model.config)
    group = n_q // n_kv
    kept_heads = [j * group + h for j, hs in zip(keep_kv, keep_q) for h in hs]
    masked = copy.deepcopy(model)
    for blk in ad.blocks(masked):  # a head whose o_proj columns are zero contributes nothing
        for h in range(n_q):
            if h not in kept_heads:
                blk.self_attn.o_proj.weight.data[:, h * hd:(h + 1) * hd] = 0
    for blk in ad.blocks(model):
        surgery.prune_heads(blk, ad, hd, n_kv, keep_kv, keep_q)
    surgery.set_head_config(model.config, len(kept_heads), len(keep_kv), hd)
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    assert _count(model) == surgery.llama_param_count(model.config)


def test_prune_heads_rejects_uneven_groups():
    model, _, ad = _tiny()
    with pytest.raises(surgery.SurgeryError, match="same number"):
        surgery.prune_heads(ad.blocks(model)[0], ad, 8, 2, [0, 1], [[0], [0, 1]])


def test_prune_hidden_equals_zeroed_channels_tied():
    model, _, ad = _tiny()
    ids = _ids()
    d = model.config.hidden_size
    keep = [c for c in range(d) if c % 4 != 1]  # 36: a multiple of the 6 query heads
    drop = [c for c in range(d) if c not in keep]
    masked = copy.deepcopy(model)
    with torch.no_grad():  # the dropped channels stay zero in the residual stream
        ad.embedding(masked).weight[:, drop] = 0
        for blk in ad.blocks(masked):
            blk.self_attn.o_proj.weight[drop, :] = 0
            blk.mlp.down_proj.weight[drop, :] = 0
    surgery.prune_hidden(model, ad, keep)
    assert model.config.hidden_size == len(keep)
    assert ad.head(model).weight is ad.embedding(model).weight
    assert (_logits(model, ids) - _logits(masked, ids)).abs().max() < TOL
    assert _count(model) == surgery.llama_param_count(model.config)


def test_hidden_width_must_stay_loadable():
    model, _, ad = _tiny()
    with pytest.raises(surgery.SurgeryError, match="multiple of num_attention_heads"):
        surgery.prune_hidden(model, ad, range(40))


def test_param_count_formula_matches_dense_models():
    for kw in ({}, {"tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True}):
        model, _, _ = _tiny(**kw)
        assert _count(model) == surgery.llama_param_count(model.config)


def test_bad_indices_are_rejected():
    model, _, ad = _tiny()
    with pytest.raises(surgery.SurgeryError):
        surgery.drop_blocks(model, ad, range(4))
    with pytest.raises(surgery.SurgeryError):
        surgery.prune_mlp_channels(ad.blocks(model)[0], ad, [0, 0, 1])
    opt, _ = make_tiny("opt")
    with pytest.raises(surgery.SurgeryError, match="MLP linears sit on the block"):
        surgery.prune_mlp_channels(adapter_for(opt).blocks(opt)[0], adapter_for(opt), [0, 1])


def _all_surgeries(model, ad):
    n_q, n_kv, hd = surgery.head_layout(model.config)
    surgery.drop_blocks(model, ad, [2])
    surgery.drop_sublayer(model, ad, 0, "attn")   # layer 0: the cache length lives there
    surgery.drop_sublayer(model, ad, 1, "mlp")
    for i, blk in enumerate(ad.blocks(model)):
        if i != 0:
            surgery.prune_heads(blk, ad, hd, n_kv, [0, 1], [[0, 1], [1, 2]])
        if i != 1:
            surgery.prune_mlp_channels(blk, ad, list(range(0, model.config.intermediate_size, 2)))
    surgery.set_head_config(model.config, 4, 2, hd)
    model.config.intermediate_size //= 2
    surgery.prune_hidden(model, ad, list(range(40)))


def test_save_reload_generate_with_kv_cache(tmp_path):
    model, tok, ad = _tiny()
    _all_surgeries(model, ad)
    ids = _ids(seq=10)[:1]
    model.save_pretrained(tmp_path, safe_serialization=True)
    back = surgery.load_pruned(tmp_path)
    assert (_logits(back, ids) - _logits(model, ids)).abs().max() < TOL
    assert _count(back) == _count(model)
    # Greedy generation with the KV cache equals step-by-step recomputation without it.
    back.generation_config.pad_token_id = tok.pad_token_id
    gen = back.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    seq = ids
    for _ in range(6):
        nxt = _logits(back, seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(gen, seq)


def test_width_and_depth_pruned_models_load_with_plain_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    model, _, ad = _tiny()
    n_q, n_kv, hd = surgery.head_layout(model.config)
    surgery.drop_blocks(model, ad, [0, 3])
    for blk in ad.blocks(model):
        surgery.prune_heads(blk, ad, hd, n_kv, [0, 1], [[0], [2]])
        surgery.prune_mlp_channels(blk, ad, range(0, 100))
    surgery.set_head_config(model.config, 2, 2, hd)
    model.config.intermediate_size = 100
    surgery.prune_hidden(model, ad, range(1, 33))
    model.save_pretrained(tmp_path, safe_serialization=True)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids = _ids(seq=12)
    assert (_logits(back, ids) - _logits(model, ids)).abs().max() < TOL
    out = back.generate(ids[:1], max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
    assert out.shape == (1, 16)
