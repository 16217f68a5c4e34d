"""KV-cache policies keep the tokens their references keep, token by token (chunk=1, the papers'
per-token eviction) on a tiny MHA model (one KV head per query head, where the per-KV-head scores
of the bounded-cache runner equal the references' per-head scores):

- H2O (FMInference/H2O h2o_hf/utils_real_drop H2OKVCache_LayerWise): per head, a key's score is
  the attention it received summed over every query so far (new keys enter with this step's
  attention); once the cache exceeds hh + recent, keep the `recent` newest and the hh top-scored
  among the older ones.
- Keyformer (d-matrix-ai/keyformer-llm attention.py): the same accumulation of
  gumbel_softmax(logits, tau) (soft) instead of the attention probabilities.
- StreamingLLM (mit-han-lab/streaming-llm StartRecentKVCache): keep the first `sink` positions
  and the most recent ones, by position only.

The reference trackers below see the attention probabilities the model produced (the input both
sides share; they are recorded where the runner hands them to the policy) and keep their own list
of original positions per layer and head; prunebench's choice is read back from the indices its
`select` returns. Both lists must be equal after every eviction."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.kv.bounded import generate_bounded
from harness.kv import POLICIES
from tests.conftest import make_tiny

KV_HEADS = 4   # == query heads: MHA


class Tracker:
    """Original positions kept per (layer, head) on both sides; attention recorded per layer."""

    def __init__(self, layers: int):
        self.ours = {i: None for i in range(layers)}   # [heads][positions]
        self.ref = {i: None for i in range(layers)}
        self.ref_scores = {i: None for i in range(layers)}    # [heads, cached] float64
        self.next_pos = {i: 0 for i in range(layers)}
        self.evictions = 0

    def append(self, layer: int, new: int) -> None:
        """`new` tokens entered layer's cache (the same positions on both sides)."""
        p = self.next_pos[layer]
        pos = list(range(p, p + new))
        for side in (self.ours, self.ref):
            side[layer] = [pos[:] for _ in range(KV_HEADS)] if side[layer] is None else [h + pos for h in side[layer]]
        self.next_pos[layer] = p + new


def instrument(policy, tracker: Tracker, reference_keep, reference_score=None):
    """Wrap policy.observe / policy.select (instance attributes) to feed the reference tracker."""
    observe, select = policy.observe, policy.select
    seen = set()

    def rec_observe(state, layer, attn, kv_heads):            # attn [1, heads, q, k]
        tracker.append(layer, attn.shape[2])
        seen.add(layer)
        if reference_score is not None:
            step = reference_score(attn[0].double())            # [heads, k]: summed over queries
            prev = tracker.ref_scores[layer]
            if prev is not None:
                step[:, : prev.shape[1]] += prev
            tracker.ref_scores[layer] = step
        return observe(state, layer, attn, kv_heads)

    def rec_select(state, layer, length, capacity, batch, kv_heads, device):
        if layer not in seen:                                   # position-only policy: no observe
            tracker.append(layer, length - (len(tracker.ours[layer][0]) if tracker.ours[layer] else 0))
        keep = select(state, layer, length, capacity, batch, kv_heads, device)   # [1, heads, capacity]
        tracker.ours[layer] = [[h[j] for j in keep[0, k].tolist()] for k, h in enumerate(tracker.ours[layer])]
        ref_idx = reference_keep(tracker.ref_scores[layer], length, capacity)   # per head: sorted indices
        tracker.ref[layer] = [[h[j] for j in ref_idx[k]] for k, h in enumerate(tracker.ref[layer])]
        if tracker.ref_scores[layer] is not None:
            tracker.ref_scores[layer] = torch.stack([tracker.ref_scores[layer][k, ref_idx[k]]
                                                     for k in range(KV_HEADS)])
        assert tracker.ours[layer] == tracker.ref[layer], f"layer {layer}, eviction {tracker.evictions}"
        tracker.evictions += 1
        return keep

    policy.observe, policy.select = rec_observe, rec_select


def heavy_recent_keep(hh: int, recent: int):
    """H2O's rule: top-hh scores among all but the `recent` newest, plus the `recent` newest."""
    def keep(scores, length, capacity):
        assert capacity == hh + recent
        out = []
        for s in scores:                                        # s [length]
            top = torch.topk(s[: length - recent], hh).indices.tolist()
            out.append(sorted(top) + list(range(length - recent, length)))
        return out
    return keep


def run(policy, prompt_len=40, new_tokens=12, seed=0):
    model, _ = make_tiny("llama", seed=seed, num_key_value_heads=KV_HEADS)
    with torch.no_grad():   # peaked attention (random init is near uniform: oldest = heaviest)
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6)
            layer.self_attn.k_proj.weight.mul_(6)
    prompt = torch.randint(0, 200, (1, prompt_len), generator=torch.Generator().manual_seed(seed))
    return generate_bounded(model, adapter_for(model), prompt, new_tokens, policy=policy, chunk=1)


def test_h2o_keeps_reference_heavy_hitters():
    policy = POLICIES.build("h2o", {"budget": 6, "window": 4})
    tracker = Tracker(4)
    instrument(policy, tracker, heavy_recent_keep(6, 4), reference_score=lambda a: a.sum(1))
    run(policy)
    assert tracker.evictions == 4 * (40 + 12 - 10)            # every layer, every token past capacity
    # the choice depends on the scores: not every head keeps the same tokens (nor only the oldest)
    kept = {tuple(h) for layer in tracker.ours.values() for h in layer}
    assert len(kept) > 1 and any(h[:6] != tuple(range(6)) for h in kept)


def test_keyformer_keeps_reference_key_tokens():
    """The noise is the method's documented stream (a generator seeded noise_seed + window seed,
    uniform draws of the attention's shape, one per observed forward); the reference scores with
    it as keyformer's gumbel_softmax(logits, tau, hard=False): softmax((logits + g) / tau). The
    logits are log p up to a per-row constant, which softmax ignores."""
    tau = 0.7
    policy = POLICIES.build("keyformer", {"budget": 6, "window": 4, "tau": tau, "noise_seed": 3})
    gen = torch.Generator().manual_seed(3 + 0)                 # window seed 0 (generate_bounded)

    def score(p):                                               # p [heads, q, k] float64
        u = torch.rand(p.shape, generator=gen).clamp_(1e-10, 1 - 1e-10)
        g = -torch.log(-torch.log(u))
        logits = torch.log(p.clamp_min(0))                      # masked keys: -inf
        return torch.softmax((logits + g.double()) / tau, dim=-1).sum(1)

    tracker = Tracker(4)
    instrument(policy, tracker, heavy_recent_keep(6, 4), reference_score=score)
    run(policy)
    assert tracker.evictions == 4 * (40 + 12 - 10)
    h2o = POLICIES.build("h2o", {"budget": 6, "window": 4})
    t2 = Tracker(4)
    instrument(h2o, t2, heavy_recent_keep(6, 4), reference_score=lambda a: a.sum(1))
    run(h2o)
    assert t2.ours != tracker.ours, "the Gumbel noise must change the choice"


@pytest.mark.parametrize("sink", [4, 1])
def test_streaming_llm_keeps_sinks_and_recent(sink):
    def keep(_scores, length, capacity):
        return [list(range(sink)) + list(range(length - (capacity - sink), length))] * KV_HEADS

    policy = POLICIES.build("streaming_llm", {"budget": 6, "window": 4, "sink": sink})
    tracker = Tracker(4)
    instrument(policy, tracker, keep)
    run(policy)
    assert tracker.evictions == 4 * (40 + 12 - 10)
    assert tracker.ours[0][0] == list(range(sink)) + list(range(52 - (10 - sink), 52))
