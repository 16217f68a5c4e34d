"""Adapters derived from each family's tiny random-init model (conf/model/tiny-<family>.yaml): the
block loop reproduces the model's own forward, above the sliding window where there is one."""

import pytest
import torch
from torch import nn

from harness.adapters import AdapterError, adapter_for
from harness.blocks.capture import capture_block_inputs, run_block
from tests.conftest import TINY_FAMILIES, make_tiny, make_tiny_family

SEQ = 40   # above every tiny config's sliding window (16)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_block_by_block_matches_full_forward(family):
    model, _ = make_tiny_family(family)
    adapter = adapter_for(model)
    window = getattr(model.config, "sliding_window", None)
    assert window is None or window < SEQ
    ids = torch.randint(0, 250, (3, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states  # embeddings, then each block
        inputs = capture_block_inputs(model, adapter, ids, batch_size=2, device="cpu")
        for i, block in enumerate(adapter.blocks(model)):
            got = torch.cat(inputs.hidden)
            assert torch.allclose(got, hidden[i], atol=1e-5), f"block {i} input differs"
            inputs = inputs.advance(run_block(block, adapter, inputs))


def test_alternating_layers_get_their_own_mask_and_rotary():
    """Gemma-3: sliding layers get a banded mask and the local rotary table, global layers not;
    replaying block 0's kwargs everywhere (the old capture) would be wrong from block 5 on."""
    model, _ = make_tiny_family("gemma3_text")
    adapter = adapter_for(model)
    ids = torch.randint(0, 250, (1, SEQ), generator=torch.Generator().manual_seed(0))
    inputs = capture_block_inputs(model, adapter, ids, batch_size=1, device="cpu")
    kinds = model.config.layer_types
    assert "sliding_attention" in kinds and "full_attention" in kinds
    sliding, full = kinds.index("sliding_attention"), kinds.index("full_attention")
    kw_s, kw_f = inputs.per_block[sliding][0], inputs.per_block[full][0]
    assert not torch.equal(kw_s["position_embeddings"][0], kw_f["position_embeddings"][0])
    same_kind = [i for i, k in enumerate(kinds) if k == kinds[sliding]]
    # blocks of one kind share the very same tensors (no copy per block)
    assert all(inputs.per_block[i][0]["position_embeddings"][0] is kw_s["position_embeddings"][0] for i in same_kind)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_linears_and_input_groups(family):
    model, _ = make_tiny_family(family)
    adapter = adapter_for(model)
    block = adapter.blocks(model)[0]
    linears = adapter.linears(block)
    assert linears and all(isinstance(lin, nn.Linear) for lin in linears.values())
    groups = adapter.input_groups(block)
    assert sorted(n for g in groups for n in g) == sorted(linears)
    for group in groups:   # members of a group really read the same input width
        assert len({linears[n].in_features for n in group}) == 1
    assert adapter.embedding(model).weight.shape[0] == model.config.vocab_size
    assert adapter.head(model).weight.shape[0] == model.config.vocab_size
    assert not any("router" in type(m).__name__.lower() for m in linears.values())


def test_family_structure_is_read_off_the_model():
    expect = {   # family: (attention inputs, MLP inputs, parallel, width surgery applies)
        "llama": (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), False, True),
        "phi3": (("qkv_proj",), ("gate_up_proj",), False, False),
        "gpt_neox": (("query_key_value",), ("dense_h_to_4h",), True, False),
        "cohere": (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), True, True),
        "olmo2": (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), False, False),
        "opt": (("q_proj", "k_proj", "v_proj"), ("fc1",), False, False),
    }
    for family, (attn_in, mlp_in, parallel, width) in expect.items():
        ad = adapter_for(make_tiny_family(family)[0])
        assert (ad.attn_inputs, ad.mlp_inputs, ad.parallel, ad.supports_surgery) == (attn_in, mlp_in, parallel, width), family
    gemma = adapter_for(make_tiny_family("gemma2")[0])
    assert (gemma.attn_norm, gemma.mlp_norm) == ("input_layernorm", "pre_feedforward_layernorm")
    olmo = adapter_for(make_tiny_family("olmo2")[0])
    assert (olmo.attn_norm, olmo.mlp_norm) == ("", "")   # OLMo-2 normalises sublayer outputs
    cohere = adapter_for(make_tiny_family("cohere")[0])
    # one norm feeds attention and MLP: q/k/v and gate/up read one tensor, one statistic
    assert cohere.input_groups()[0] == ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "mlp.gate_proj", "mlp.up_proj")
    moe = adapter_for(make_tiny_family("qwen2_moe")[0])
    assert moe.moe and moe.routers == ("mlp.shared_expert_gate",)


def test_unknown_layout_names_the_part_and_the_yaml():
    class Flat(nn.Module):   # no ModuleList of blocks at all
        def __init__(self):
            super().__init__()
            self.config = make_tiny("llama")[0].config
            self.lin = nn.Linear(4, 4)

    with pytest.raises(AdapterError, match=r"(?s)decoder blocks.*adapter:\n    layers:"):
        adapter_for(Flat())


def test_yaml_override_replaces_a_derived_field():
    model, _ = make_tiny("llama")
    ad = adapter_for(model, {"mlp_norm": "input_layernorm"})
    assert ad.mlp_norm == "input_layernorm"
    with pytest.raises(AdapterError, match="unknown adapter field"):
        adapter_for(model, {"not_a_field": 1})
