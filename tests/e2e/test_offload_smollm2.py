"""SmolLM2-135M pruned with weights in memory (none), on the host (cpu) and streamed from
safetensors (disk): bit-identical pruned weights and perplexities."""

import pytest
import torch

from harness.config import compose_config
from harness.offload import SafetensorsStore
from harness.run import run_experiment

pytestmark = pytest.mark.slow
QUICK = ["model=smollm2-135m", "eval=quick", "eval.ppl.max_windows=2", "calib.n_samples=4", "runtime.threads=2",
         "output.save_model=true"]


@pytest.mark.parametrize("method", [["method=wanda", "target=unstructured_50"],
                                    ["method=sparsegpt", "target=unstructured_50"]], ids=["wanda", "sparsegpt"])
def test_offload_modes_give_identical_weights_and_perplexity(method, tmp_path):
    recs = {}
    for mode in ("none", "cpu", "disk"):
        rec = run_experiment(compose_config(QUICK + method + [f"runtime.offload={mode}",
                                                              f"paths.results_dir={tmp_path / mode}"]))
        assert rec["status"] == "ok", rec["error"]
        assert rec["memory"]["offload"] == mode
        recs[mode] = rec
    stores = {m: SafetensorsStore.from_dir(r["output"]["model_dir"]) for m, r in recs.items()}
    names = sorted(stores["none"].names())
    assert len(names) == 30 * 9 + 2   # 30 blocks x 9 tensors, embedding (tied head) and final norm
    for mode in ("cpu", "disk"):
        assert sorted(stores[mode].names()) == names
        assert all(torch.equal(stores[mode].read(n), stores["none"].read(n)) for n in names), mode
        for key in ("value", "nll_sum", "n_tokens", "tokens_sha256"):
            assert recs[mode]["metrics"]["ppl"]["wikitext2"][key] == recs["none"]["metrics"]["ppl"]["wikitext2"][key]
    assert recs["disk"]["metrics"]["ppl"]["wikitext2"]["blockwise"]
    assert recs["disk"]["measured"]["sparsity_blocks"] == pytest.approx(0.5)
