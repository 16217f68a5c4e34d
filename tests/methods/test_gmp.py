"""Gradual magnitude pruning (methods/gmp.py): the cubic schedule, exact final sparsity on the stored
weights with embeddings and LM head untouched, a resumed run picking the schedule up where it was,
validation refusing it without a training recovery, and one scaling cell end to end on a tiny model
(the record fields harness.scaling reads)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.targets import Target
from methods.gmp import cubic_sparsity
from methods.registry import build_method
from tests.conftest import make_tiny


def test_schedule_is_cubic_between_start_and_end():
    steps, final = 400, 0.8
    # every step an update: s(done) = s_f (1 - (1 - p)^3), p = (done - t0) / (t1 - t0), t0=100, t1=300
    for done in (101, 150, 200, 250, 299):
        p = (done - 100) / 200
        assert cubic_sparsity(done, steps, final, 0.25, 0.75, 1) == pytest.approx(final * (1 - (1 - p) ** 3))
    assert [cubic_sparsity(d, steps, final, 0.25, 0.75, 1) for d in (1, 50, 100)] == [0.0, 0.0, 0.0]
    assert [cubic_sparsity(d, steps, final, 0.25, 0.75, 1) for d in (300, 301, 400)] == [final] * 3
    seq = [cubic_sparsity(d, steps, final, 0.25, 0.75, 7) for d in range(1, steps + 1)]
    assert all(b >= a for a, b in zip(seq, seq[1:]))                    # never un-prunes
    assert seq[300] == final > seq[299]        # r = t1 = 300 (done 301) is an update although 300 % 7 != 0
    assert len(set(seq[100:299])) == len(range(105, 300, 7)) + 1         # held between updates


def _ctx(model, ratio=0.75):
    prune = PruneContext(adapter=adapter_for(model), target=Target(f"unstructured_{int(ratio * 100)}", "unstructured",
                                                                   ratio), calibration=None, allocator=None, device="cpu")
    return SimpleNamespace(adapter=prune.adapter, prune=prune)


def test_final_sparsity_is_exact_per_layer_and_embeddings_stay_dense():
    model, _ = make_tiny("llama")
    emb = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings().weight.detach().clone()
    norms = {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n}
    ctx = _ctx(model)
    method = build_method("gmp", {"update_every": 0.05})
    assert method.prune(model, ctx.prune)["pruned_during"] == "training"
    hook = method.training_hook(model, ctx, 40)
    for step in range(1, 41):
        hook(step)
    for block in ctx.adapter.blocks(model):
        for lin in ctx.adapter.linears(block).values():
            assert int((lin.weight == 0).sum()) == int(lin.weight.numel() * 0.75)
    assert torch.equal(model.get_input_embeddings().weight, emb)
    assert torch.equal(model.get_output_embeddings().weight, head)
    assert all(torch.equal(p, norms[n]) for n, p in model.named_parameters() if "norm" in n)
    report = hook.report()
    assert report["final_sparsity"] == 0.75 and report["schedule"][-1] == [31, 0.75]   # r = t1 = 30 is step 31


def test_magnitude_keeps_the_largest_weights_and_masks_survive_optimizer_moves():
    model, _ = make_tiny("llama")
    ctx = _ctx(model, 0.5)
    lin = ctx.adapter.linears(ctx.adapter.blocks(model)[0])["mlp.up_proj"]
    before = lin.weight.detach().abs().clone()
    hook = build_method("gmp", {"update_every": 0.25}).training_hook(model, ctx, 4)
    hook(3)                                      # t1 = 3: the final level
    kept = lin.weight != 0
    assert before[kept].min() >= before[~kept].max()
    with torch.no_grad():
        lin.weight.add_(1.0)                     # an optimizer step moves pruned weights off zero
    hook(4)                                      # no new level: the same mask re-applied
    assert torch.equal(lin.weight != 0, kept)


def test_a_resumed_hook_recomputes_the_mask_it_had():
    model, _ = make_tiny("llama")
    ctx = _ctx(model)
    method = build_method("gmp", {"update_every": 0.05})      # every 2 of 40 steps; t0 = 10, t1 = 30
    first = method.training_hook(model, ctx, 40)
    for step in range(1, 22):                                  # step 21 (r = 20) is an update
        first(step)
    masks = {n: m.clone() for n, m in first.masks.items()}
    resumed = method.training_hook(model, ctx, 40)             # a new process: no mask in memory
    resumed(22)                                                # r = 21: held at the level of r = 20
    assert resumed.sparsity == first.sparsity > 0
    assert all(torch.equal(resumed.masks[n], masks[n]) for n in masks)


def test_validation_needs_a_training_recovery():
    from harness.config import compose_config
    from harness.validate import ConfigError, validate
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config(["model=tiny-llama", "method=gmp", "target=unstructured_50"]),
                                 resolve=True)
    with pytest.raises(ConfigError, match="needs recovery=qat"):
        validate(cfg)


def test_bad_schedule_parameters_are_refused():
    with pytest.raises(ValueError, match="start < end"):
        build_method("gmp", {"start": 0.8, "end": 0.5})
    with pytest.raises(ValueError, match="update_every"):
        build_method("gmp", {"update_every": 0.0})


def test_a_scaling_cell_on_a_tiny_model(tmp_path, data_dir):
    """One cell of suite=scaling, shrunk: the record carries S (on stored weights), N, D and L."""
    from harness.config import compose_config
    from harness.run import run_experiment
    from harness.scaling import point

    record = run_experiment(compose_config([
        "model=tiny-llama", "method=gmp", "target=unstructured_75", "recovery=qat", "eval=quick",
        "eval.ppl.max_windows=1", "recovery.steps=12", "recovery.batch_size=2", "recovery.seq_len=32",
        "recovery.lr=3e-3", "recovery.warmup_steps=1", "recovery.heldout_windows=4", "recovery.max_docs=80",
        "recovery.checkpoint_every=0", "recovery.ppl_before=false", "runtime.threads=1",
        f"paths.results_dir={tmp_path}"]))
    assert record["status"] == "ok", record["error"]
    m = record["measured"]
    assert m["sparsity_blocks"] == pytest.approx(0.75, abs=1e-3) and m["embedding_sparsity"] == 0.0
    assert record["recovery"]["pruning"]["final_sparsity"] == 0.75
    assert record["recovery"]["pruning"]["schedule"][-1][1] == 0.75
    s, n, d, loss = point(record, "tiny cell")
    assert (s, d) == (m["sparsity_blocks"], 12 * 2 * 32)
    assert n == pytest.approx(m["params_block_linears"] * 0.25, rel=1e-3)
    assert loss == record["recovery"]["heldout_loss_after"] < record["recovery"]["heldout_loss_before"]
