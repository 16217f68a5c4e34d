"""bitnet158 contract on tiny models: three stored values per output scale, a real forward change
(8-bit activations), a reload (from_pretrained + the saved quant config, load_pruned, load_saved)
that gives the same outputs, validation against other targets, and a whole run's record."""

from __future__ import annotations

import json

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.quant import QUANT_KEY, absmean_ternary, measure_bits
from harness.targets import TERNARY_BITS, Target
from harness.validate import ConfigError
from methods.registry import build_method
from tests.conftest import make_tiny

TERNARY = Target("ternary", "ternary", 0.0, bits=1.58)


def _quantised(seed=0):
    model, tok = make_tiny("llama", seed=seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = PruneContext(adapter=adapter_for(model), target=TERNARY, calibration=None, allocator=None, device="cpu")
    report = build_method("bitnet158").prune(model, ctx)
    return model, tok, before, report


def _ids():
    return torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(1))


def test_weights_take_exactly_three_values_per_output_scale():
    model, _, before, report = _quantised()
    adapter = adapter_for(model)
    names = getattr(model.config, QUANT_KEY)["linears"]
    assert report["quantised_linears"] == len(names) == 7 * len(adapter.blocks(model))
    for name in names:
        w, w0 = model.get_submodule(name).weight, before[f"{name}.weight"]
        s = w0.abs().mean()                                      # the per-tensor absmean scale
        values = torch.unique(w)
        assert len(values) == 3, name
        torch.testing.assert_close(values, torch.stack([-s, torch.zeros(()), s]), rtol=1e-6, atol=0)
    bits = measure_bits(model, adapter)
    assert bits["bits_per_weight_levels"] == pytest.approx(TERNARY_BITS)
    assert bits["weight_levels_max"] == 3 and bits["bits_per_weight"] > TERNARY_BITS


def test_activations_are_quantised_in_the_forward():
    model, _, _, _ = _quantised()
    lin = model.get_submodule(getattr(model.config, QUANT_KEY)["linears"][0])
    x = torch.randn(2, 5, lin.in_features)
    y = lin(x)
    assert not torch.allclose(y, torch.nn.functional.linear(x, lin.weight))   # the hook changed the input
    scale = 127 / x.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(y, torch.nn.functional.linear((x * scale).round() / scale, lin.weight))


def test_reload_gives_the_same_outputs(tmp_path):
    from transformers import AutoModelForCausalLM

    from harness.export import load_saved
    from harness.quant import apply_saved_quant
    from harness.surgery import load_pruned

    model, tok, _, _ = _quantised()
    model.eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    assert QUANT_KEY in json.loads((tmp_path / "config.json").read_text())
    with torch.no_grad():
        want = model(input_ids=_ids()).logits
        plain = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
        assert not torch.equal(plain(input_ids=_ids()).logits, want)      # weights alone are not the model
        for loaded in (apply_saved_quant(plain), load_pruned(tmp_path).eval(), load_saved(tmp_path)[0]):
            assert torch.equal(loaded(input_ids=_ids()).logits, want)


@pytest.mark.parametrize("method,target", [("bitnet158", "unstructured_50"), ("bitnet158", "none"),
                                           ("wanda", "ternary"), ("magnitude", "ternary")])
def test_bitnet158_and_ternary_go_only_together(method, target, data_dir):
    from harness.config import compose_config
    from harness.validate import validate

    with pytest.raises(ConfigError, match="cannot produce pattern") as info:
        validate(compose_config(["model=tiny-llama", f"method={method}", f"target={target}"]))
    assert "\n" not in str(info.value)


def test_ternary_target_needs_log2_3_bits():
    with pytest.raises(ValueError, match="bits: 1.58"):
        Target("t", "ternary", 0.0, bits=2.0)
    with pytest.raises(ValueError, match="only pattern ternary"):
        Target("u", "unstructured", 0.5, bits=1.58)


def test_run_records_bits_sparsity_and_ppl_before_and_after(tmp_path, data_dir):
    from harness.config import compose_config
    from harness.export import load_saved
    from harness.run import run_experiment

    cfg = compose_config(["model=tiny-llama", "method=bitnet158", "target=ternary", "recovery=qat",
                          f"paths.results_dir={tmp_path}", f"+paths.checkpoint_dir={tmp_path}/ck", "runtime.threads=1",
                          "recovery.steps=4", "recovery.batch_size=2", "recovery.seq_len=32", "recovery.lr=1e-2",
                          "recovery.warmup_steps=0", "recovery.heldout_docs=8", "recovery.heldout_windows=2",
                          "recovery.max_docs=40", "eval.ppl.max_windows=2", "eval.ppl.seq_len=128",
                          "output.save_model=true"])
    record = run_experiment(cfg)
    assert record["status"] == "ok", record["error"]
    measured = record["measured"]
    assert measured["quant"]["bits_per_weight_levels"] == pytest.approx(TERNARY_BITS)
    assert 0.2 < measured["sparsity_blocks"] < 0.5          # the ternary zeros, counted on the stored weights
    assert record["recovery"]["qat"]["ppl_before"]["wikitext2"] > 0
    assert record["metrics"]["ppl"]["wikitext2"]["value"] > 0
    model, _ = load_saved(record["output"]["model_dir"])    # the saved model is the measured one
    assert measure_bits(model, adapter_for(model)) == measured["quant"]
