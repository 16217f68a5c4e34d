"""Hard-concrete structure masks (harness.hard_concrete): the gate distribution, exact hardening,
hooks that mask what they claim, the expected size, the Lagrangian's ascent, and the prune that
computes what the hardened masks compute."""

from __future__ import annotations

import math

import pytest
import torch

from harness.adapters import adapter_for
from harness.hard_concrete import (HardConcrete, Lagrangian, ModelShape, StructureMasks, param_count,
                                   constraint_options, constraint_parameters, warmup_target)
from harness.surgery import llama_param_count
from tests.conftest import make_tiny


def _ids(seed=0, b=2, s=12, vocab=256):
    return torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(seed))


def test_prob_nonzero_matches_sampled_frequency():
    torch.manual_seed(0)
    g = HardConcrete(5)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    gen = torch.Generator().manual_seed(1)
    samples = torch.stack([g.sample(gen) for _ in range(4000)])        # [4000, 5]
    assert samples.min() >= 0 and samples.max() <= 1
    freq = (samples > 0).float().mean(0)
    assert torch.allclose(freq, g.prob_nonzero().detach(), atol=0.03)
    # exact zeros and ones both occur (the stretch): that is what makes L0 differentiable and sparse
    assert (samples == 0).any() and (samples == 1).any()


def test_harden_keeps_exactly_k_per_row_lower_index_on_ties():
    g = HardConcrete((2, 6))
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([[1.0, 2.0, 2.0, 0.0, 2.0, -1.0], [0.0] * 6]))
    hard = g.harden(2)
    assert hard.sum(-1).tolist() == [2, 2]
    assert hard[0].nonzero().flatten().tolist() == [1, 2]
    assert hard[1].nonzero().flatten().tolist() == [0, 1]
    det = g.deterministic(3)
    assert ((det > 0) == g.harden(3)).all()
    with pytest.raises(ValueError):
        g.harden(0)


def test_init_keep_sets_log_alpha_mean():
    g = HardConcrete(2000, init_keep=0.25, init_std=0.0)
    assert torch.allclose(g.log_alpha, torch.full((2000,), math.log(0.25 / 0.75)))


def test_param_count_equals_surgery_count_for_integer_widths():
    model, _ = make_tiny("llama")
    cfg = model.config
    for args in [dict(hidden=64, intermediate=128, n_q=4, n_kv=2), dict(hidden=32, intermediate=40, n_q=2, n_kv=1)]:
        got = param_count(cfg, cfg.num_hidden_layers, args["n_q"], args["n_kv"], args["intermediate"], args["hidden"])
        assert got == llama_param_count(cfg, **args)
    assert param_count(cfg, cfg.num_hidden_layers, 4, 2, 128, 64) == sum(p.numel() for p in model.parameters())


def test_remove_restores_the_unmasked_model():
    model, _ = make_tiny("llama")
    ids = _ids()
    with torch.no_grad():
        ref = model(ids).logits
    masks = StructureMasks(model, adapter_for(model))
    masks.train()
    with torch.no_grad():
        masked = model(ids).logits
    assert not torch.allclose(masked, ref)
    masks.remove()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)


def test_closed_gates_silence_their_structures():
    """A closed MLP-channel gate equals a zeroed down_proj column; a closed layer gate equals
    zeroed o_proj / down_proj rows; all heads closed equals a zeroed o_proj."""
    model, _ = make_tiny("llama")
    ids = _ids(1)
    masks = StructureMasks(model, adapter_for(model), structures=("layers", "heads", "intermediate"))
    with torch.no_grad():
        for m in masks.masks.values():
            m.log_alpha.fill_(4.0)
        masks.masks["intermediate"].log_alpha[1, :64] = -4.0
        masks.masks["layers"].log_alpha[2] = -4.0
        masks.masks["heads"].log_alpha[0] = -4.0
    masks.eval()
    with torch.no_grad():
        z = masks.deterministic()
        got = model(ids).logits
    masks.remove()
    ad = adapter_for(model)
    blocks = ad.blocks(model)
    with torch.no_grad():
        for i, blk in enumerate(blocks):
            o = blk.self_attn.o_proj
            d = blk.mlp.down_proj
            zh = z["heads"][i].reshape(-1).repeat_interleave(o.in_features // z["heads"][i].numel())
            o.weight.mul_(zh * z["layers"][i])
            d.weight.mul_(z["intermediate"][i] * z["layers"][i])
        assert torch.allclose(model(ids).logits, got, atol=1e-5)
    # eval keeps each row's rounded expected count: a few weak channels survive next to the 64 open
    kept = int((z["intermediate"][1] > 0).sum())
    assert kept == round(float(masks.masks["intermediate"].expected_count()[1].detach())) and 64 <= kept < 128
    assert z["layers"][2] == 0 and (z["heads"][0] == 0).all() and (z["heads"][1] > 0).all()


def test_expected_params_is_differentiable_and_reaches_the_count():
    model, _ = make_tiny("llama")
    masks = StructureMasks(model, adapter_for(model))
    n = masks.expected_params()
    n.backward()
    assert all(m.log_alpha.grad is not None and m.log_alpha.grad.abs().sum() > 0 for m in masks.masks.values())
    # nearly open gates (log_alpha at the clamp) -> close to the full model's size
    full = sum(p.numel() for p in model.parameters())
    assert 0.97 * full < float(n.detach()) <= full


def test_training_loss_reaches_log_alpha():
    model, _ = make_tiny("llama")
    # log_alpha 0: gates mostly strictly inside (0, 1), where the clamp passes gradients
    masks = StructureMasks(model, adapter_for(model), init_log_alpha=0.0)
    masks.train()
    ids = _ids(2)
    model(ids, labels=ids).loss.backward()
    assert all(m.log_alpha.grad is not None and m.log_alpha.grad.abs().sum() > 0 for m in masks.masks.values())


def test_lagrangian_lambdas_ascend_masks_descend():
    model, _ = make_tiny("llama")
    masks = StructureMasks(model, adapter_for(model))
    lag = Lagrangian(masks.structures)
    shape = ModelShape(layers=3, heads=2, kv_heads=2, intermediate=64, hidden=48)
    opt = torch.optim.AdamW([{"params": [p], **constraint_options(n, 0.1)}
                             for n, p in constraint_parameters(masks, lag).items()], weight_decay=0.0)
    before = {s: float(v.mean()) for s, v in masks.expected_sparsity().items()}
    for _ in range(5):
        opt.zero_grad()
        loss = lag(masks.expected_sparsity(), masks.target_sparsity(shape))
        loss.backward()
        opt.step()
    after = {s: float(v.mean()) for s, v in masks.expected_sparsity().items()}
    target = masks.target_sparsity(shape)
    for s in masks.structures:
        # expected sparsity starts below the target, so lambda1 rises (ascent) and sparsity grows
        assert before[s] < target[s]
        assert after[s] > before[s]
    assert all(float(lag.lambdas[f"{s}_1"]) < 0 for s in masks.structures)   # gap (e - t) < 0: ascent makes it negative


def test_warmup_target_ramps_linearly():
    assert warmup_target(0.5, 0, 10) == 0.0
    assert warmup_target(0.5, 5, 10) == 0.25
    assert warmup_target(0.5, 20, 10) == 0.5
    assert warmup_target(0.5, 3, 0) == 0.5


@pytest.mark.parametrize("granularity,shape", [
    ("query", ModelShape(layers=3, heads=2, kv_heads=2, intermediate=48, hidden=40)),
    ("kv_group", ModelShape(layers=2, heads=2, kv_heads=1, intermediate=96, hidden=32)),
])
def test_prune_computes_what_the_hardened_masks_compute(tmp_path, granularity, shape):
    from transformers import AutoModelForCausalLM

    model, _ = make_tiny("llama")
    masks = StructureMasks(model, adapter_for(model), head_granularity=granularity, seed=3)
    with torch.no_grad():   # a spread of gate strengths, so the hardening has real choices to make
        for m in masks.masks.values():
            m.log_alpha.copy_(torch.randn(m.log_alpha.shape, generator=torch.Generator().manual_seed(7)) * 2)
    masks.eval()
    masks.eval_shape = shape
    ids = _ids(3)
    with torch.no_grad():
        masked = model(ids).logits
    keep = masks.prune(shape)
    assert ModelShape.of(model.config) == shape
    assert len(keep["layers"]) == shape.layers and len(keep["hidden"]) == shape.hidden
    assert sum(p.numel() for p in model.parameters()) == llama_param_count(
        model.config) == param_count(model.config, shape.layers, shape.heads, shape.kv_heads, shape.intermediate,
                                     shape.hidden)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, masked, atol=1e-4)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, masked, atol=1e-4)


def test_unreachable_shapes_are_refused():
    model, _ = make_tiny("llama")
    masks = StructureMasks(model, adapter_for(model), structures=("heads", "intermediate"))
    with pytest.raises(ValueError, match="hidden"):
        masks.hard_keep(ModelShape(layers=4, heads=4, kv_heads=2, intermediate=64, hidden=32))
    with pytest.raises(ValueError, match="query"):
        masks.hard_keep(ModelShape(layers=4, heads=3, kv_heads=2, intermediate=64, hidden=64))
