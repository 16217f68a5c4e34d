"""Wanda 2:4 on SmolLM2-135M saved with output.format=compressed reloads through compressed-tensors
with logits identical to the pruned model in memory."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow


def test_wanda_2_4_smollm2_compressed_reload_identical_logits(tmp_path, data_dir, cache_dir):
    from harness.adapters import adapter_for
    from harness.blocks.context import PruneContext
    from harness.calibration import sample_calibration
    from harness.config import compose_config
    from harness.export import load_saved
    from harness.models import load_model
    from harness.run import run_experiment
    from harness.validate import validate

    cfg = compose_config(["model=smollm2-135m", "method=wanda", "target=nm_2_4", "runtime.threads=1",
                          "output.save_model=true", "output.format=compressed", f"paths.results_dir={tmp_path}",
                          f"paths.cache_dir={cache_dir}", "eval.ppl.max_windows=1"])
    record = run_experiment(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["output"]["compression"] == "sparse-24-bitmask"
    assert record["measured"]["nm_check"]["violations"] == 0

    config = OmegaConf.to_container(cfg, resolve=True)
    plan = validate(config)
    loaded = load_model(config["model"]["name"], config["model"]["source"], torch.float32, "cpu", cache_dir)
    model, tok = loaded.model, loaded.tokenizer
    c = config["calib"]
    calib = sample_calibration(tok, c["corpus"], c["split"], c["n_samples"], c["seq_len"], c["seed"], plan.data_dir)
    ctx = PruneContext(adapter=adapter_for(model), target=plan.target, calibration=calib, allocator=plan.allocator,
                       device="cpu", batch_size=1, propagation="pruned", seed=0, tokenizer=tok,
                       cache_dir=plan.cache_dir, model_sha256=loaded.sha256, reuse=False)
    plan.method.prune(model, ctx)

    reloaded, _ = load_saved(record["output"]["model_dir"])
    x = calib.input_ids[:2, :128]
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, model(x).logits)
