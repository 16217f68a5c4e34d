"""Sheared LLaMA on tiny models: the masks reach the target shape exactly after hardening, the pruned
model reloads with from_pretrained, mask learning and continued pretraining resume exactly after a
kill, and dynamic batch loading moves the proportions towards the domain furthest from its
reference (and is plain training with one domain)."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.hard_concrete import ModelShape
from harness.recovery import get_recovery
from harness.recovery.context import RecoveryContext
from harness.recovery.domains import Domain, DynamicBatches, update_proportions
from harness.recovery.train import Preempted
from harness.surgery import llama_param_count
from harness.targets import Target, TargetError
from methods.registry import build_method
from tests.conftest import make_tiny

SHAPE = dict(layers=3, heads=2, kv_heads=2, intermediate=64, hidden=32)   # tiny-llama: 4, 4, 2, 128, 64
PARAMS = dict(steps=6, batch_size=2, seq_len=32, warmup_steps=1, lagrangian_warmup_steps=3, lag_lr=0.5,
              domains="c4/train,ptb/validation", update_every=2, heldout_docs=8, heldout_windows=2, max_docs=60,
              latency_repeats=0)


def _ctx(model, tok, data_dir, cache_dir=None, shape=SHAPE):
    """With `cache_dir`, checkpoints go to <cache_dir>/checkpoints/run (harness.run passes the run's folder)."""
    return PruneContext(adapter=adapter_for(model), target=Target("tiny_shape", "shape", shape=shape),
                        calibration=None, allocator=None, device="cpu", tokenizer=tok, data_dir=data_dir,
                        cache_dir=cache_dir, model_sha256="tiny",
                        checkpoint_dir=cache_dir / "checkpoints" / "run" if cache_dir is not None else None)


def _prune(data_dir, cache_dir=None, **extra):
    model, tok = make_tiny("llama")
    ctx = _ctx(model, tok, data_dir, cache_dir)
    method = build_method("sheared_llama", PARAMS | extra)
    method.check(model, ctx)
    return model, tok, method.prune(model, ctx)


def test_masks_reach_the_target_shape_and_the_model_reloads(tmp_path, data_dir):
    from transformers import AutoModelForCausalLM

    model, _, report = _prune(data_dir)
    assert ModelShape.of(model.config) == ModelShape(**SHAPE)
    n = sum(p.numel() for p in model.parameters())
    assert n == report["params_target"] == report["params_after"] == llama_param_count(model.config)
    assert report["head_granularity"] == "query"
    learnt = report["mask_learning"]
    assert learnt["steps"] == 6 and len(learnt["curve"]) == 6
    # the Lagrangian pulled the expected sizes down from the (almost all open) start
    assert learnt["curve"][-1]["expected_params"] < learnt["curve"][0]["expected_params"]
    dyn = report["dynamic_loading"]
    assert dyn["domains"] == ["c4/train", "ptb/validation"] and not dyn["single_domain"]
    assert [u["step"] for u in dyn["updates"]] == [2, 4, 6]
    assert dyn["proportion_final"] != dyn["proportion_initial"]
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, model(input_ids=x).logits)


def test_fewer_kv_groups_prune_whole_groups(data_dir):
    model, tok = make_tiny("llama")
    shape = dict(layers=4, heads=2, kv_heads=1, intermediate=96, hidden=64)
    ctx = _ctx(model, tok, data_dir, shape=shape)
    method = build_method("sheared_llama", PARAMS | {"steps": 2, "structures": "heads,intermediate",
                                                     "domains": "c4/train"})
    report = method.prune(model, ctx)
    assert report["head_granularity"] == "kv_group"
    assert ModelShape.of(model.config) == ModelShape(**shape)
    assert report["dynamic_loading"]["single_domain"] and "plain continued pretraining" in report["dynamic_loading"]["note"]


def test_mask_learning_resumes_exactly_after_a_kill(tmp_path, data_dir):
    straight, _, rep_a = _prune(data_dir, tmp_path / "a", checkpoint_every=2)
    with pytest.raises(Preempted):
        _prune(data_dir, tmp_path / "b", checkpoint_every=2, stop_after=3)
    torch.manual_seed(1234)   # a restarted process has another RNG state; the checkpoint restores it
    resumed, _, rep_b = _prune(data_dir, tmp_path / "b", checkpoint_every=2)
    assert rep_b["mask_learning"]["resumed_from_step"] == 3
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    assert rep_a["mask_learning"]["curve"] == rep_b["mask_learning"]["curve"]
    assert rep_a["dynamic_loading"]["updates"] == rep_b["dynamic_loading"]["updates"]
    assert not any((tmp_path / "b" / "checkpoints").iterdir())   # completed: checkpoint removed


def test_a_harness_run_checkpoints_in_its_checkpoint_folder(tmp_path, data_dir):
    """Under harness.run the masks are checkpointed in the run's folder under `paths.checkpoint_dir`
    (keyed without `stop_after`, so the rerun finds it), not in the cache."""
    import dataclasses

    from harness.validate import prune_checkpoint_dir

    params = {"steps": 6, "checkpoint_every": 2}
    base = {"method": {"name": "sheared_llama", "params": params}, "paths": {"checkpoint_dir": str(tmp_path / "ckpts")}}
    stopped = dict(base, method={"name": "sheared_llama", "params": params | {"stop_after": 3}})
    folder = prune_checkpoint_dir(stopped, tmp_path / "cache", {})
    assert folder == prune_checkpoint_dir(base, tmp_path / "cache", {}) and folder.parent == tmp_path / "ckpts"
    model, tok = make_tiny("llama")
    ctx = dataclasses.replace(_ctx(model, tok, data_dir, tmp_path / "cache"), checkpoint_dir=folder)
    with pytest.raises(Preempted):
        build_method("sheared_llama", PARAMS | params | {"stop_after": 3}).prune(model, ctx)
    assert (folder / "masks").is_dir() and not (tmp_path / "cache" / "checkpoints").exists()


def test_unreachable_or_malformed_shapes_are_refused(data_dir):
    model, tok = make_tiny("llama")
    method = build_method("sheared_llama", PARAMS)
    query = build_method("sheared_llama", PARAMS | {"head_granularity": "query"})
    with pytest.raises(TargetError, match="query-head masks keep every KV group"):
        query.check(model, _ctx(model, tok, data_dir, shape=dict(SHAPE, heads=2, kv_heads=1)))
    with pytest.raises(TargetError, match="multiple of heads"):
        Target("bad", "shape", shape=dict(SHAPE, heads=3, kv_heads=1, hidden=32))
    with pytest.raises(TargetError, match="must be in"):
        method.check(model, _ctx(model, tok, data_dir, shape=dict(SHAPE, intermediate=200)))
    with pytest.raises(TargetError, match="exactly"):
        Target("bad", "shape", shape={"layers": 2})


def test_doremi_update_moves_weight_to_the_largest_gap():
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    new = update_proportions(w, torch.tensor([3.0, 2.0], dtype=torch.float64),
                             torch.tensor([2.0, 2.0], dtype=torch.float64), "doremi")
    # log w + gap, softmax: e^1 / (e^1 + e^0), then smoothed with c = 1e-4
    expected = (1 - 1e-4) * torch.softmax(torch.tensor([1.0, 0.0], dtype=torch.float64), 0) + 1e-4 / 2
    torch.testing.assert_close(new, expected)
    assert torch.equal(update_proportions(w, torch.tensor([3.0, 2.0]).double(), torch.zeros(2).double(), "constant"), w)
    clipped = update_proportions(w, torch.tensor([1.0, 3.0]).double(), torch.tensor([2.0, 2.0]).double(), "doremi",
                                 clip_gap=True)
    assert clipped[1] > clipped[0] and clipped.sum().item() == pytest.approx(1.0)


def test_single_domain_batches_are_plain_training():
    pool = torch.arange(40).view(10, 4)
    src = DynamicBatches([Domain("only", pool, pool[:2])], None, windows_per_step=3, update_every=1)
    seen = torch.cat([src.batch(s) for s in range(3)])
    firsts = seen[:, 0].tolist()      # one epoch in a seeded order: 9 distinct windows of the pool
    assert len(set(firsts)) == 9 and set(firsts) <= set(pool[:, 0].tolist())
    src.maybe_update(lambda w: pytest.fail("one domain never measures losses"))
    assert src.describe()["single_domain"] and src.weights.tolist() == [1.0]


def _rctx(model, data_dir, ckpt=None, teacher=None):
    prune = PruneContext(adapter=adapter_for(model), target=Target("tiny_shape", "shape", shape=SHAPE),
                         calibration=None, allocator=None, device="cpu")
    return RecoveryContext(prune=prune, run_id="test", device="cpu", dtype=torch.float32, data_dir=data_dir,
                           checkpoint_dir=ckpt, eval_texts=[("wikitext2", "test")], teacher_factory=teacher)


RECOVERY = dict(name="continued", steps=6, batch_size=2, seq_len=32, lr=1e-3, warmup_steps=1, schedule="cosine",
                heldout_docs=8, heldout_windows=2, checkpoint_every=2, max_docs=60, seed=0, keep_sparsity=False,
                domains=["c4/train", "ptb/validation"], update_every=2, ppl_before=False)


def test_continued_pretraining_updates_proportions_and_resumes_exactly(tmp_path, data_dir):
    _, tok = make_tiny("llama")
    teacher = lambda: make_tiny("llama", seed=5)   # noqa: E731  (the "unpruned" model: reference losses)
    straight = make_tiny("llama")[0]
    rep_a = get_recovery("continued")(straight, tok, RECOVERY, _rctx(straight, data_dir, tmp_path / "a", teacher))
    dyn = rep_a["dynamic_loading"]
    assert [u["step"] for u in dyn["updates"]] == [2, 4, 6] and not dyn["single_domain"]
    assert all(r is not None for r in dyn["reference_loss"])
    assert rep_a["heldout_loss_after"] < rep_a["heldout_loss_before"]
    first = make_tiny("llama")[0]
    with pytest.raises(Preempted):
        get_recovery("continued")(first, tok, RECOVERY | {"stop_after": 3},
                                  _rctx(first, data_dir, tmp_path / "b", teacher))
    torch.manual_seed(99)
    resumed = make_tiny("llama")[0]
    rep_b = get_recovery("continued")(resumed, tok, RECOVERY, _rctx(resumed, data_dir, tmp_path / "b", teacher))
    assert rep_b["resumed_from_step"] == 3
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    assert rep_b["dynamic_loading"]["updates"] == dyn["updates"]


def test_continued_with_one_corpus_is_plain_continued_pretraining(data_dir):
    model, tok = make_tiny("llama")
    params = {k: v for k, v in RECOVERY.items() if k != "domains"} | {"steps": 2}
    rep = get_recovery("continued")(model, tok, params, _rctx(model, data_dir))
    dyn = rep["dynamic_loading"]
    assert dyn["domains"] == ["c4/train"] and dyn["single_domain"] and dyn["updates"] == []
    assert "plain continued pretraining" in dyn["note"]
