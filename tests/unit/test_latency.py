"""Latency evaluator on a tiny model, and (GPU) the 2:4 semi-structured kernel path."""

from __future__ import annotations

import pytest
import torch

from harness.evaluation.latency import measure, spread

SECTION = {"warmup": 1, "repeats": 3, "prefill": {"batch": [1, 2], "prompt_len": [16]},
           "decode": {"batch": [1], "prompt_len": 8, "new_tokens": 4}}


def test_spread_median_and_iqr():
    s = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 100.0 and s["iqr"] == 2.0


def test_latency_returns_medians(tiny_llama):
    model, _ = tiny_llama
    r = measure(model, SECTION, "cpu")
    assert r["kernel_path"] == "dense" and r["threads"] == torch.get_num_threads() and r["dtype"] == "float32"
    assert [(p["batch"], p["prompt_len"]) for p in r["prefill"]] == [(1, 16), (2, 16)]
    for p in r["prefill"]:
        s = p["seconds"]
        assert s["n"] == 3 and 0 < s["min"] <= s["median"] <= s["max"]
    d = r["decode"][0]["ms_per_token"]
    assert d["n"] == 3 and d["median"] > 0


def test_semi_structured_refused_on_cpu(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="CUDA"):
        measure(model, {**SECTION, "semi_structured": True}, "cpu")


@pytest.mark.gpu
def test_semi_structured_2_4_on_cuda():
    """A 2:4-masked model runs through torch's semi-structured kernels with the same outputs."""
    from harness.adapters import adapter_for
    from harness.blocks.masks import apply_keep_mask, keep_nm
    from harness.evaluation.latency import semi_structured_weights
    from tests.conftest import make_tiny

    model, _ = make_tiny("llama", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                        num_key_value_heads=2)
    adapter = adapter_for(model)
    for block in adapter.blocks(model):
        for lin in adapter.linears(block).values():
            apply_keep_mask(lin, keep_nm(lin.weight.data.abs().float(), 2, 4))
    model = model.to("cuda", torch.bfloat16)
    ids = torch.randint(0, 200, (4, 64), device="cuda")
    with torch.no_grad():
        dense = model(ids).logits.float()
        with semi_structured_weights(model, adapter, True) as info:
            sparse = model(ids).logits.float()
    assert info["kernel_path"].startswith("semi_structured:") and info["dense_linears"] == 0
    assert torch.allclose(dense, sparse, atol=5e-2, rtol=5e-2)
    r = measure(model, {**SECTION, "semi_structured": True}, "cuda")
    assert r["kernel_path"].startswith("semi_structured:") and r["decode"][0]["ms_per_token"]["median"] > 0
