"""The CUDA path of the pipeline (skipped without a GPU; run on a lent GPU machine)."""

import pytest
import torch

from harness.config import compose_config
from harness.run import run_experiment

pytestmark = pytest.mark.gpu
TINY = ["model=tiny-llama", "eval.ppl.max_windows=2", "eval.ppl.seq_len=128", "calib.n_samples=4",
        "calib.seq_len=64", "runtime.device=cuda"]


@pytest.mark.parametrize("method,target", [("dense", "none"), ("magnitude", "unstructured_50"),
                                           ("wanda", "unstructured_50"), ("wanda", "nm_2_4")])
def test_pipeline_on_cuda_in_bf16(method, target, tmp_path):
    rec = run_experiment(compose_config(TINY + [f"method={method}", f"target={target}",
                                                f"paths.results_dir={tmp_path}"]))
    assert rec["status"] == "ok", rec["error"]
    assert rec["env"]["dtype"] == "torch.bfloat16" and rec["env"]["gpu"]
    assert rec["memory"]["peak_cuda_bytes"] > 0
    if target != "none":
        assert rec["measured"]["sparsity_blocks"] == pytest.approx(0.5, abs=1e-3)
    if target == "nm_2_4":
        assert rec["measured"]["nm_check"]["violations"] == 0


def test_cpu_and_cuda_wanda_masks_agree_in_float32(tmp_path):
    """Same statistics in float32 on both devices -> the same mask (up to ties)."""
    recs = [run_experiment(compose_config(TINY + ["method=wanda", "target=unstructured_50", f"runtime.device={d}",
                                                  "runtime.dtype=float32", f"paths.results_dir={tmp_path / d}"]))
            for d in ("cpu", "cuda")]
    a, b = (r["measured"]["per_layer"] for r in recs)
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)
    pa, pb = (r["metrics"]["ppl"]["wikitext2"]["value"] for r in recs)
    assert pa == pytest.approx(pb, rel=1e-3)
