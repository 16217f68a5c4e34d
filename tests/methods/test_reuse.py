"""Reuse across a sweep: block-0 inputs, dense-propagation statistics and calibration tokens are
read from the cache on a second run, give identical results, and the report says so."""

from __future__ import annotations

import torch

from harness.blocks.cache import block_cache
from harness.blocks.loop import block_loop
from harness.calibration import sample_calibration
from harness.targets import Target
from methods.registry import build_method
from tests.methods.tiny_block_helpers import tiny_context


def _run(cache_dir, propagation):
    target = Target("unstructured_50", "unstructured", 0.5)
    model, adapter, ctx = tiny_context(target, cache_dir=cache_dir, model_sha256="tiny-seed0")
    ctx.propagation = propagation
    report = build_method("wanda").prune(model, ctx)
    weights = [lin.weight.detach().clone() for b in adapter.blocks(model) for lin in adapter.linears(b).values()]
    return report, weights


def test_dense_propagation_reuses_inputs_and_statistics(tmp_path):
    first, w1 = _run(tmp_path, "dense")
    assert first["reused"]["block_inputs"] is False and first["reused"]["dense_block_statistics"] == 0
    second, w2 = _run(tmp_path, "dense")
    assert second["reused"]["block_inputs"] is True
    assert second["reused"]["dense_block_statistics"] == len(w1) // 7
    assert second["timing"]["n_block_forwards"] == 0
    for a, b in zip(w1, w2):
        assert torch.equal(a, b)


def test_pruned_propagation_reuses_only_block_inputs(tmp_path):
    _run(tmp_path, "pruned")
    second, _ = _run(tmp_path, "pruned")
    assert second["reused"] == {"calibration_tokens": False, "block_inputs": True, "dense_block_statistics": 0}


def test_cached_statistics_keep_group_sharing(tmp_path):
    model, adapter, ctx = tiny_context(Target("u", "unstructured", 0.5))
    cache = block_cache(tmp_path, "m", ctx.calibration.tokens_sha256, torch.float32, 2)
    seen = []
    for _ in range(2):
        block_loop(model, adapter, ctx.calibration.input_ids, lambda blk: seen.append(blk.stats), [0.5] * 4,
                   statistics=("hessian",), batch_size=2, propagation="dense", cache=cache)
    cached = seen[-1]
    assert cached["self_attn.q_proj"] is cached["self_attn.k_proj"] is cached["self_attn.v_proj"]
    torch.testing.assert_close(cached["mlp.down_proj"]["hessian"], seen[3]["mlp.down_proj"]["hessian"])


def test_calibration_tokens_reused(tmp_path, data_dir, tiny_llama):
    _model, tok = tiny_llama
    a = sample_calibration(tok, "c4", "train", 2, 32, 0, data_dir, cache_dir=tmp_path)
    b = sample_calibration(tok, "c4", "train", 2, 32, 0, data_dir, cache_dir=tmp_path)
    c = sample_calibration(tok, "c4", "train", 2, 32, 1, data_dir, cache_dir=tmp_path)
    assert not a.reused and b.reused and not c.reused
    assert a.tokens_sha256 == b.tokens_sha256 != c.tokens_sha256
