"""Recovery on CUDA: bf16 autocast over float32 weights, gradient checkpointing (skipped without a GPU).
The same path ran on SmolLM2 on an H100 (docs/recovery.md, record 46b8a88f0840b1ed)."""

import pytest

from harness.config import compose_config
from harness.run import run_experiment

pytestmark = pytest.mark.gpu


def test_lora_on_cuda_with_autocast_and_checkpointing(tmp_path):
    cfg = compose_config(["model=tiny-llama", "runtime.device=cuda", "runtime.dtype=float32", "method=wanda",
                          "target=unstructured_50", "recovery=lora", "recovery.steps=4", "recovery.warmup_steps=1", "recovery.seq_len=64",
                          "recovery.autocast=bfloat16", "recovery.gradient_checkpointing=true",
                          "recovery.max_docs=60", "recovery.heldout_docs=8", "recovery.heldout_windows=2",
                          "calib.n_samples=4", "calib.seq_len=64", "eval.ppl.max_windows=2",
                          "eval.ppl.seq_len=128", f"paths.results_dir={tmp_path}"])
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]
    assert rec["env"]["gpu"] and rec["recovery"]["budget"]["autocast"] == "bfloat16"
    assert rec["measured"]["sparsity_blocks"] == pytest.approx(0.5, abs=1e-3)
