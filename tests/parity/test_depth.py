"""Depth metrics choose the blocks their references choose, on a tiny 10-block model:
ShortGPT's Block Influence (sramshetty/ShortGPT: sum over tokens of 1 - cos(h_i, h_{i+1}), lowest
n removed), Gromov et al.'s angular distance (same reference, angular=True: arccos(cos)/pi of the
last token between h_l and h_{l+n}, the lowest window of n contiguous blocks), and Shortened
LLaMA's Taylor+ and PPL+ (Nota-NetsPresso/shortened-llm: block score = sum over the block's
weights of |sum_batches w * dL/dw|, or the LM loss with the block removed; the lowest blocks go,
never blocks 0-3 or the last two, the "+" heuristic of block_prune.py)."""

from __future__ import annotations

import copy

import torch

from harness.targets import Target
from methods.registry import build_method
from tests.parity.tiny import calibration, context, model_pair

N_BLOCKS = 10
PLUS = {0, 1, 2, 3, N_BLOCKS - 2, N_BLOCKS - 1}


def blocks_target(k: int) -> Target:
    return Target(f"depth_blocks_{k}", "blocks", count=k)


def residual_states(model, ids) -> list[torch.Tensor]:
    """h_0 (block-0 input) .. h_L (last block output, before the final norm): [n, seq, d] each."""
    states = []
    layers = model.model.layers
    hooks = [layers[0].register_forward_pre_hook(
        lambda _m, a, kw: states.append(a[0] if a else kw["hidden_states"]), with_kwargs=True)]
    hooks += [l.register_forward_hook(lambda _m, _a, o: states.append(o[0] if isinstance(o, tuple) else o))
              for l in layers]
    with torch.no_grad():
        model(ids, use_cache=False)
    for h in hooks:
        h.remove()
    return states


def removed_by(method: str, params: dict, k: int, seed=0):
    ours, ref = model_pair(seed=seed, num_hidden_layers=N_BLOCKS)
    calib = calibration(n=4, seq=32)
    report = build_method(method, {**params, "latency_repeats": 0}).prune(ours, context(ours, blocks_target(k), calib))
    return report["removed"]["indices"], ref, calib.input_ids


def test_block_influence_equals_shortgpt_reference():
    removed, ref, ids = removed_by("shortgpt", {}, 3)
    h = residual_states(ref, ids)
    bi = [float((1 - torch.nn.functional.cosine_similarity(h[i].double(), h[i + 1].double(), dim=-1)).sum())
          for i in range(N_BLOCKS)]
    want = sorted(sorted(range(N_BLOCKS), key=lambda i: bi[i])[:3])
    assert removed == want


def test_angular_equals_gromov_window():
    k = 3
    removed, ref, ids = removed_by("depth", {"metric": "angular"}, k)
    h = residual_states(ref, ids)
    dist = [float((torch.arccos(torch.nn.functional.cosine_similarity(
        h[i][:, -1].double(), h[i + k][:, -1].double(), dim=-1).clamp(-1, 1)) / torch.pi).sum())
        for i in range(N_BLOCKS - k + 1)]
    start = min(range(len(dist)), key=lambda i: dist[i])
    assert removed == list(range(start, start + k))


def taylor_block_scores(model, ids) -> list[float]:
    salience = {}
    for start in range(0, ids.shape[0], 2):                     # batches, signed sum of w * grad
        batch = ids[start:start + 2]
        model.zero_grad()
        model(batch, labels=batch, use_cache=False).loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None and ".layers." in n:
                salience[n] = salience.get(n, 0) + (p * p.grad).detach()
    return [sum(float(s.abs().sum()) for n, s in salience.items() if f".layers.{i}." in n) for i in range(N_BLOCKS)]


def test_taylor_plus_never_removes_protected_blocks_and_matches_reference():
    k = 3
    removed, ref, ids = removed_by("depth", {"metric": "taylor"}, k)
    scores = taylor_block_scores(ref, ids)
    order = sorted(range(N_BLOCKS), key=lambda i: scores[i])
    want = sorted([i for i in order if i not in PLUS][:k])
    assert sorted(order[:k]) != want, "this model's unprotected choice must touch a protected block"
    assert removed == want and not set(removed) & PLUS


def test_ppl_plus_matches_reference():
    k = 2
    removed, ref, ids = removed_by("depth", {"metric": "ppl_drop"}, k)
    losses = []
    for i in range(N_BLOCKS):
        m = copy.deepcopy(ref)
        del m.model.layers[i]
        m.config.num_hidden_layers -= 1
        for j, layer in enumerate(m.model.layers):
            layer.self_attn.layer_idx = j
        with torch.no_grad():
            losses.append(float(m(ids, labels=ids, use_cache=False).loss))
    order = sorted(range(N_BLOCKS), key=lambda i: losses[i])
    assert removed == sorted([i for i in order if i not in PLUS][:k])


def test_protection_is_a_parameter():
    removed, _, _ = removed_by("depth", {"metric": "taylor", "protected": []}, 3)
    removed_plus, _, _ = removed_by("depth", {"metric": "taylor"}, 3)
    assert removed != removed_plus
