"""End to end on the embedded SmolLM2-135M with the quick presets (the foundation's done-when)."""

import pytest

from harness.config import compose_config
from harness.run import run_experiment

pytestmark = pytest.mark.slow
QUICK = ["model=smollm2-135m", "eval=quick", "eval.ppl.max_windows=4", "runtime.threads=2"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    runs = {
        "dense": ["method=dense", "target=none"],
        "magnitude": ["method=magnitude", "target=unstructured_50"],
        "wanda": ["method=wanda", "target=unstructured_50"],
        "wanda_2_4": ["method=wanda", "target=nm_2_4", "output.save_model=true"],
    }
    return {k: run_experiment(compose_config(QUICK + v + [f"paths.results_dir={out}"])) for k, v in runs.items()}


def _ppl(rec):
    return rec["metrics"]["ppl"]["wikitext2"]["value"]


def test_all_ok_and_dense_finite(records):
    for name, rec in records.items():
        assert rec["status"] == "ok", (name, rec["error"])
    assert 1 < _ppl(records["dense"]) < 1000


def test_wanda_beats_magnitude_and_both_are_worse_than_dense(records):
    assert _ppl(records["dense"]) < _ppl(records["wanda"]) < _ppl(records["magnitude"])


def test_measured_sparsity_and_untouched_embeddings(records):
    dense = records["dense"]["measured"]
    for name in ("magnitude", "wanda"):
        m = records[name]["measured"]
        assert abs(m["sparsity_blocks"] - 0.5) < 0.005
        assert m["embedding_sparsity"] == dense["embedding_sparsity"]
        assert m["lm_head_sparsity"] == dense["lm_head_sparsity"]
        # ~21% of SmolLM2's parameters are the tied embedding: 50% of block linears is ~40% overall
        assert 0.35 < m["sparsity_total"] < 0.45


def test_nm_2_4_on_the_stored_weights(records):
    from safetensors.torch import load_file

    rec = records["wanda_2_4"]
    assert rec["measured"]["nm_check"]["violations"] == 0
    from pathlib import Path

    tensors = {}
    for f in Path(rec["output"]["model_dir"]).glob("*.safetensors"):
        tensors.update(load_file(f))
    checked = 0
    for name, w in tensors.items():
        if ".layers." in name and name.endswith("proj.weight"):
            groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
            assert int(groups.max()) <= 2, name
            checked += 1
    assert checked == 30 * 7
