"""Offload modes (harness.offload): weights streamed from safetensors unit by unit give exactly the
numbers of the whole model in memory, for every kind of method; blockwise perplexity equals the
model's forward; streamed depth importance equals scores from every block's captured states."""

from __future__ import annotations

import json

import pytest
import torch

from harness.config import compose_config
from harness.offload import SafetensorsStore, choose_mode, plan_memory
from harness.run import model_dir_arguments, run_experiment
from tests.conftest import make_tiny

TINY = ["eval.ppl.max_windows=2", "eval.ppl.seq_len=64", "eval.ppl.batch_size=2", "calib.n_samples=4",
        "calib.seq_len=64", "runtime.threads=1", "output.save_model=true"]


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    """A tiny LLaMA saved in bf16 (a shipped half-precision checkpoint): stored bf16, computed float32."""
    path = tmp_path_factory.mktemp("bf16") / "m"
    model, tok = make_tiny("llama", seed=1, num_hidden_layers=6)
    model.to(torch.bfloat16).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _weights(model_dir) -> dict[str, torch.Tensor]:
    store = SafetensorsStore.from_dir(model_dir)
    return {n: store.read(n) for n in store.names()}


def _run(overrides, tmp_path, mode):
    cfg = compose_config(overrides + TINY + [f"runtime.offload={mode}", f"paths.results_dir={tmp_path / mode}"])
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]
    assert rec["memory"]["offload"] == mode and rec["memory"]["peak_rss_bytes"] > 0
    return rec


@pytest.mark.parametrize("method", [
    ["method=wanda", "target=unstructured_50"],
    ["method=sparsegpt", "target=nm_2_4"],
    ["method=magnitude", "target=unstructured_50"],
    ["method=shortgpt", "target=depth_25", "++method.params.latency_repeats=0"],
    ["method=minitron", "target=width_20", "++method.params.latency_repeats=0"],
], ids=["wanda", "sparsegpt", "magnitude", "shortgpt", "minitron"])
def test_offload_modes_are_bit_identical(method, bf16_dir, tmp_path):
    """Pruned weights (as written) and perplexity sums equal across none | cpu | disk, on a bf16
    checkpoint computed in float32 (weight, depth and width methods)."""
    model = ["model=local_dir", f"model.source.path={bf16_dir}"]
    recs = {mode: _run(model + method, tmp_path, mode) for mode in ("none", "cpu", "disk")}
    ref = recs["none"]
    assert ref["memory"]["storage_dtype"] == "bfloat16" and ref["memory"]["compute_dtype"] == "float32"
    ref_w = _weights(ref["output"]["model_dir"])
    assert all(t.dtype == torch.bfloat16 for t in ref_w.values() if t.is_floating_point())
    for mode in ("cpu", "disk"):
        rec = recs[mode]
        w = _weights(rec["output"]["model_dir"])
        assert sorted(w) == sorted(ref_w)
        assert all(torch.equal(w[n], ref_w[n]) for n in w), mode
        assert rec["metrics"]["ppl"]["wikitext2"]["nll_sum"] == ref["metrics"]["ppl"]["wikitext2"]["nll_sum"]
        # every measured figure (block, total, embedding and head sparsity), whichever way weights are read
        assert rec["measured"] == ref["measured"], mode
        assert rec["prune_report"].get("removed") == ref["prune_report"].get("removed")
    assert recs["disk"]["metrics"]["ppl"]["wikitext2"]["blockwise"]
    # the disk-mode output is a loadable HF model whose config follows the surgery
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(recs["disk"]["output"]["model_dir"])
    assert reloaded.config.num_hidden_layers == json.loads(
        (ref["output"]["model_dir"] and open(f"{ref['output']['model_dir']}/config.json").read()))["num_hidden_layers"]


def test_disk_mode_streams_blocks_and_records_the_plan(bf16_dir, tmp_path):
    """Wanda in disk mode onloads blocks one at a time (no materialisation) and the record keeps
    the predicted peaks behind the mode."""
    rec = _run(["model=local_dir", f"model.source.path={bf16_dir}", "method=wanda", "target=unstructured_50"],
               tmp_path, "disk")
    assert rec["memory"]["materialized"] is None
    assert rec["memory"]["predicted"]["host_peak_bytes"] > 0
    assert rec["measured"]["sparsity_blocks"] == pytest.approx(0.5)


def test_store_reads_equal_safetensors(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    import harness.offload as off

    tensors = {"a": torch.randn(37, 11).to(torch.bfloat16), "b": torch.randn(5), "c": torch.arange(7)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    monkeypatch.setattr(off, "_CHUNK", 64)   # many chunks per tensor
    store = SafetensorsStore.from_dir(tmp_path)
    ref = load_file(str(tmp_path / "x.safetensors"))
    for name in ref:
        assert torch.equal(store.read(name), ref[name])
    assert torch.equal(store.read("a", torch.float32), ref["a"].float())


def test_blockwise_perplexity_equals_the_forward(tmp_path):
    from harness.evaluation.ppl import window_nll, window_nll_blockwise
    from harness.models import load_model

    model, tok = make_tiny("llama", seed=2)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    windows = torch.randint(0, 250, (5, 32), generator=torch.Generator().manual_seed(0))
    full = window_nll(model, windows, 2, "cpu", progress=False)
    loaded = load_model("t", {"kind": "local", "path": str(tmp_path / "m")}, torch.float32, "cpu", tmp_path,
                        offload="disk")
    assert window_nll_blockwise(loaded.model, windows, 2, "cpu") == full


# -------------------------------------------------------------------------------------------------
# depth importance: streamed == every unit's states captured first (the former implementation)

@torch.no_grad()
def _captured_unit_io(model, adapter, input_ids, unit, batch_size):
    """Reference: run the dense model block by block keeping every unit's input and output."""
    from harness.blocks.capture import capture_block_inputs

    inp = capture_block_inputs(model, adapter, input_ids, batch_size, "cpu")
    cat = lambda hs: torch.cat([h.float().cpu() for h in hs])  # noqa: E731
    ins, outs = [], []
    states = inp.hidden
    for block in adapter.blocks(model):
        attn_out = []
        handle = adapter.attention(block).register_forward_hook(
            lambda _m, _a, out: attn_out.append(out[0] if isinstance(out, tuple) else out))
        new = [adapter.block_output(block(h, **kw)) for h, kw in zip(states, inp.kwargs)]
        handle.remove()
        x, y = cat(states), cat(new)
        mid = x + cat(attn_out)
        ins.append({"block": x, "attn": x, "mlp": mid}[unit])
        outs.append({"block": y, "attn": mid, "mlp": y}[unit])
        states = new
    return ins, outs


@pytest.mark.parametrize("unit", ["block", "attn", "mlp"])
def test_streamed_depth_scores_equal_captured(unit):
    from harness.adapters import adapter_for
    from harness.blocks import importance as imp

    model, _ = make_tiny("llama", num_hidden_layers=6)
    ad = adapter_for(model)
    ids = torch.randint(0, 250, (4, 24), generator=torch.Generator().manual_seed(3))
    ins, outs = _captured_unit_io(model, ad, ids, unit, 2)
    probe = imp.UnitProbe(model, ad, unit, ids, batch_size=2)
    n = 2 if unit == "block" else 1
    expect = {
        "block_influence": [imp.block_influence(x, y) for x, y in zip(ins, outs)],
        "rel_l2": [imp.relative_lp(x, y, 2) for x, y in zip(ins, outs)],
        "angular": [imp.angular_distance(ins[l], outs[l + n - 1]) for l in range(len(ins) - n + 1)],
    }
    for metric, want in expect.items():
        got = imp.METRICS.get(metric).score(probe, n)
        assert got.tolist() == want, metric


# -------------------------------------------------------------------------------------------------
# choosing the mode

def test_auto_picks_disk_when_the_model_does_not_fit():
    cfg = dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256)
    mode, plan = choose_mode("auto", cfg, "cpu", torch.bfloat16, torch.float32, 16, 512, False, eval_tokens=256)
    assert mode == "disk" and plan["host_peak_bytes"] < 4e9
    tiny = dict(cfg, num_hidden_layers=2, hidden_size=64, intermediate_size=128, vocab_size=256)
    assert choose_mode("auto", tiny, "cpu", torch.float32, torch.float32, 20, 512, False)[0] == "none"
    # SparseGPT's Hessians are counted: the 14336-wide down_proj Hessian alone is 0.8 GB
    h = plan_memory(cfg, mode="disk", device="cpu", storage_bytes=2, compute_bytes=4, calib_tokens=512,
                    hessian=True, eval_tokens=256)
    assert h["host_peak_bytes"] > plan["host_peak_bytes"] + 14336 ** 2 * 4
    assert choose_mode("auto", cfg, "cpu", torch.bfloat16, torch.float32, 40, 512, False, eval_tokens=256)[0] == "none"


def test_model_directory_argument(tmp_path):
    assert model_dir_arguments([f"model={tmp_path}", "method=wanda"]) == [
        "model=local_dir", f"model.source.path={tmp_path}", f"model.name={tmp_path.name}", "method=wanda"]
    assert model_dir_arguments(["model=tiny-llama"]) == ["model=tiny-llama"]


def test_bad_offload_is_a_config_error(tmp_path):
    from harness.validate import ConfigError, validate
    from omegaconf import OmegaConf

    cfg = compose_config(["model=tiny-llama", "runtime.offload=gpu", f"paths.results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="runtime.offload"):
        validate(OmegaConf.to_container(cfg, resolve=True))


def test_count_zeros_equals_the_mask_sum():
    """count_zeros (no int64 temporary) counts what `(t == 0).sum()` counts: -0.0 is a zero, NaN is not."""
    from harness.blocks.measure import count_zeros

    t = torch.tensor([0.0, -0.0, float("nan"), 1e-30, -3.0, 0.0], dtype=torch.bfloat16)
    assert count_zeros(t) == int((t == 0).sum()) == 3
    g = torch.randn(64, 48)
    g[g.abs() < 0.5] = 0
    assert count_zeros(g) == int((g == 0).sum())
