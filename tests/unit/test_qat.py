"""recovery=qat on tiny models: the latent weights train through the straight-through estimator and
are re-ternarised, the loss falls, a killed run resumes to the uninterrupted result, and a model with
no quantised linear trains in full precision."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.quant import QUANT_KEY
from harness.recovery import get_recovery
from harness.recovery.context import RecoveryContext
from harness.recovery.train import Preempted
from harness.targets import Target
from harness.validate import ConfigError
from methods.registry import build_method
from tests.conftest import make_tiny

BUDGET = dict(name="qat", steps=6, batch_size=2, seq_len=32, lr=1e-2, warmup_steps=1, schedule="cosine",
              heldout_docs=8, heldout_windows=4, checkpoint_every=2, max_docs=40, seed=0, keep_sparsity=False)


def _ctx(model, data_dir, ckpt=None):
    prune = PruneContext(adapter=adapter_for(model), target=Target("ternary", "ternary", 0.0, bits=1.58),
                         calibration=None, allocator=None, device="cpu")
    return RecoveryContext(prune=prune, run_id="test", device="cpu", dtype=torch.float32, data_dir=data_dir,
                           checkpoint_dir=ckpt, eval_texts=[("wikitext2", "test")])


def _ternary_model():
    model, tok = make_tiny("llama")
    ctx = PruneContext(adapter=adapter_for(model), target=Target("ternary", "ternary", 0.0, bits=1.58),
                       calibration=None, allocator=None, device="cpu")
    build_method("bitnet158").prune(model, ctx)
    return model, tok


def _three_values(model):
    return all(len(torch.unique(model.get_submodule(n).weight)) == 3
               for n in getattr(model.config, QUANT_KEY)["linears"])


def test_qat_lowers_the_loss_and_leaves_ternary_weights(data_dir):
    model, tok = _ternary_model()
    stored = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = get_recovery("qat")(model, tok, BUDGET | {"steps": 12}, _ctx(model, data_dir))
    assert report["heldout_loss_after"] < report["heldout_loss_before"]
    assert report["qat"]["quantised_linears"] == 28
    assert _three_values(model)
    assert not any(torch.equal(p, stored[n]) for n, p in model.named_parameters() if ".layers." in n)
    assert not any("parametrizations" in n for n, _ in model.named_parameters())   # plain linears again
    assert all(not p.requires_grad for p in model.parameters())


def test_qat_resumes_exactly_after_a_kill(tmp_path, data_dir):
    straight, tok = _ternary_model()
    get_recovery("qat")(straight, tok, BUDGET, _ctx(straight, data_dir, tmp_path / "a"))
    first, _ = _ternary_model()
    with pytest.raises(Preempted):
        get_recovery("qat")(first, tok, BUDGET | {"stop_after": 3}, _ctx(first, data_dir, tmp_path / "b"))
    torch.manual_seed(1234)   # a restarted process has another RNG state; the checkpoint restores it
    resumed, _ = _ternary_model()
    report = get_recovery("qat")(resumed, tok, BUDGET, _ctx(resumed, data_dir, tmp_path / "b"))
    assert report["resumed_from_step"] == 3
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    assert not (tmp_path / "b" / "qat").exists()


def test_qat_on_a_dense_model_is_full_precision_training(data_dir):
    model, tok = make_tiny("llama")
    report = get_recovery("qat")(model, tok, BUDGET, _ctx(model, data_dir))
    assert report["qat"]["quantised_linears"] == 0
    assert report["heldout_loss_after"] < report["heldout_loss_before"]
    assert len(torch.unique(model.model.layers[0].mlp.up_proj.weight)) > 3


def test_qat_refuses_kept_sparsity(data_dir):
    model, tok = _ternary_model()
    with pytest.raises(ConfigError, match="keep_sparsity"):
        get_recovery("qat")(model, tok, BUDGET | {"keep_sparsity": True}, _ctx(model, data_dir))
