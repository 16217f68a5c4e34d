"""Wanda 2:4 on SmolLM2-135M saved with output.format=compressed reloads through compressed-tensors
with logits identical to the pruned model in memory."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_wanda_2_4_smollm2_compressed_reload_identical_logits(tmp_path, data_dir, cache_dir, monkeypatch):
    from harness.config import compose_config
    from harness.export import load_saved
    from harness.run import run_experiment
    from tests.unit.test_export import capture_in_memory_logits

    x = torch.randint(0, 49152, (2, 64), generator=torch.Generator().manual_seed(0))
    in_memory = capture_in_memory_logits(monkeypatch, x)   # the pruned model as the run holds it
    cfg = compose_config(["model=smollm2-135m", "method=wanda", "target=nm_2_4", "runtime.threads=1",
                          "output.save_model=true", "output.format=compressed", f"paths.results_dir={tmp_path}",
                          f"paths.cache_dir={cache_dir}", "eval.ppl.max_windows=1"])
    record = run_experiment(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["output"]["compression"] == "sparse-24-bitmask"
    assert record["measured"]["nm_check"]["violations"] == 0
    reloaded, _ = load_saved(record["output"]["model_dir"])
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, in_memory["logits"])
