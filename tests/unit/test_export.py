"""Saved pruned models: model card and metadata beside the weights, and the compressed-tensors format
reloaded through compressed-tensors with the in-memory pruned model's logits."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf


def _run(tmp_path, *overrides):
    from harness.config import compose_config
    from harness.run import run_experiment

    cfg = compose_config(["model=tiny-llama", "method=wanda", "runtime.threads=1", "output.save_model=true",
                          f"paths.results_dir={tmp_path}", "eval.ppl.max_windows=2", *overrides])
    return run_experiment(cfg), OmegaConf.to_container(cfg, resolve=True)


def capture_in_memory_logits(monkeypatch, x):
    """Logits of the run's pruned model in memory, taken when the run hands it to save_weights."""
    import harness.export

    seen = {}
    real = harness.export.save_weights

    def spy(model, *args, **kwargs):
        with torch.no_grad():
            seen["logits"] = model(x).logits.clone()
        return real(model, *args, **kwargs)

    monkeypatch.setattr(harness.export, "save_weights", spy)
    return seen


@pytest.mark.parametrize("target, compression", [("nm_2_4", "sparse-24-bitmask"),
                                                 ("unstructured_50", "sparse-bitmask")])
def test_compressed_format_reloads_through_compressed_tensors(tmp_path, data_dir, target, compression, monkeypatch):
    from compressed_tensors import ModelCompressor

    from harness.export import load_saved

    x = torch.randint(0, 250, (2, 32), generator=torch.Generator().manual_seed(1))
    in_memory = capture_in_memory_logits(monkeypatch, x)
    record, config = _run(tmp_path, f"target={target}", "output.format=compressed")
    assert record["status"] == "ok", record["error"]
    out = tmp_path / "models" / record["run_id"]
    assert record["output"] == {"model_dir": str(out), "format": "compressed", "compression": compression,
                                "compressed_tensors": record["output"]["compressed_tensors"]}
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["sparsity_config"]["format"] == compression
    assert ModelCompressor.from_pretrained(str(out)).sparsity_config.format == compression
    # the linears really are stored compressed: values + bitmask, no dense weight
    from safetensors import safe_open

    with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.mlp.up_proj.bitmask" in keys and "model.layers.0.mlp.up_proj.weight" not in keys
    reloaded, _ = load_saved(out)
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, in_memory["logits"])


def test_model_card_and_metadata_beside_the_weights(tmp_path, data_dir):
    from harness.export import load_saved

    record, _ = _run(tmp_path, "target=unstructured_50")
    out = tmp_path / "models" / record["run_id"]
    meta = json.loads((out / "pruning_metadata.json").read_text())
    assert meta["run_id"] == record["run_id"] and meta["pruning_id"] == record["pruning_id"]
    assert meta["method"]["name"] == "wanda" and meta["method"]["paper"] == record["method"]["paper"]
    assert meta["measured"]["sparsity_blocks"] == record["measured"]["sparsity_blocks"]
    card = (out / "README.md").read_text()
    for fact in (record["method"]["paper"], "unstructured_50", str(record["measured"]["sparsity_blocks"]),
                 "c4/train, 16 x 256", f"{record['metrics']['ppl']['wikitext2']['value']:.4f}",
                 f"python -m harness.reproduce <results_dir>/records/{record['run_id']}.json"):
        assert fact in card, fact
    model, _ = load_saved(out)  # the default format loads with transformers alone
    zeros = (model.model.layers[0].mlp.up_proj.weight == 0).float().mean().item()
    assert zeros == pytest.approx(0.5, abs=0.01)


def test_compressed_format_refused_for_physical_pruning(data_dir):
    from harness.config import compose_config
    from harness.validate import ConfigError, validate

    cfg = compose_config(["model=tiny-llama", "method=shortgpt", "target=depth_25", "output.save_model=true",
                          "output.format=compressed"])
    with pytest.raises(ConfigError, match="output.format=safetensors"):
        validate(OmegaConf.to_container(cfg, resolve=True))
