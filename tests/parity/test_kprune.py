"""KPrune's core computations against an independent minimal implementation of the reference's
algorithm (snudm-starlab/k-prune, written here from its description, not its code):

- knowledge scores: the mask gradient of a unit's feature f at mask 1 is sum_d W_out[d, f] dL/dW_out[d, f]
  (computed here from ordinary weight gradients, no mask hooks); predictive knowledge = 1/2 g^2
  summed over batches / samples, representational = sum_t z_f^2 mean_d W_out[d, f]^2 / tokens,
  heads averaged over dh, score = (heads: mu x) (lam_rep rep + lam_pred pred) / unit FLOPs;
- the mask search: the reference's loop over ascending sorted scores, stopping at the first
  threshold whose surviving units cost < the budget;
- the weight tuning: least squares on the sample tokens, solved directly (numpy lstsq on the
  tall system, not the normal equations).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.adapters import adapter_for
from harness.encoders import encoder_flops
from methods.kprune import find_threshold, reconstruct, score_pass, sublayers, teacher_pass
from methods.registry import build_method
from tests.unit.test_encoders import tiny_encoder

T = 2.0


def _batches(n=3, b=4, seq=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 250, (b, seq), generator=g)
        mask = torch.ones_like(ids)
        mask[0, seq // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _independent_scores(model, adapter, batched, soft, lam_rep, lam_pred, mu, f_head, f_neuron):
    """Per sublayer (attn 0, ffn 0, ...) the unit scores, from weight gradients and captured inputs."""
    outs = [m for blk in adapter.blocks(model) for m in (adapter.part(blk, "o"), adapter.part(blk, "fc2"))]
    sq = [torch.zeros(m.in_features, dtype=torch.float64) for m in outs]
    g2 = [torch.zeros(m.in_features, dtype=torch.float64) for m in outs]
    tokens = samples = 0
    for inputs, p in zip(batched, soft):
        valid = inputs["attention_mask"].bool()
        seen = []
        hooks = [m.register_forward_hook(lambda mod, a, o: seen.append(a[0].detach()[valid].double())) for m in outs]
        model.zero_grad()
        for m in outs:
            m.weight.requires_grad_(True)
        logits = model(**inputs).logits
        loss = F.kl_div(F.log_softmax(logits / T, -1), p, reduction="batchmean") * T * T
        loss.backward()
        for h in hooks:
            h.remove()
        for i, m in enumerate(outs):
            g = (m.weight.detach() * m.weight.grad).sum(0).double()       # dL/dmask_f
            g2[i] += g ** 2
            sq[i] += seen[i].pow(2).sum(0)
        tokens += int(valid.sum())
        samples += valid.shape[0]
    scores = []
    for i, m in enumerate(outs):
        per = lam_rep * sq[i] * m.weight.detach().double().pow(2).mean(0) / tokens + lam_pred * 0.5 * g2[i] / samples
        if i % 2 == 0:
            scores.append(mu * per.view(-1, adapter.head_dim).mean(1) / f_head)
        else:
            scores.append(per / f_neuron)
    return scores


def test_knowledge_scores_match_an_independent_implementation():
    model, _ = tiny_encoder("bert", seed=3)
    model.requires_grad_(False)
    adapter = adapter_for(model)
    batched = _batches()
    flops = encoder_flops(model, adapter, 14)
    subs = sublayers(model, adapter, flops)
    soft, _ = teacher_pass(model, subs, batched, T)
    with torch.no_grad():   # the state after pruning sublayer 0: heads 1 and 3 of layer 0 zeroed
        adapter.part(adapter.blocks(model)[0], "o").weight[:, 16:32] = 0
        adapter.part(adapter.blocks(model)[0], "o").weight[:, 48:] = 0
    method = build_method("kprune", {"lam_rep": 1e-2})
    ours = method.scores(subs, method.score_pass(model, subs, 1, batched, soft), 1)
    ref = _independent_scores(model, adapter, batched, soft, 1e-2, 1.0, method.mu,
                              flops["flops_per_head"], flops["flops_per_neuron"])
    for i in range(1, len(subs)):
        assert torch.allclose(ours[i].double(), ref[i], rtol=1e-4, atol=1e-12), i
    assert float(ours[1].abs().sum()) > 0


def test_scores_at_the_first_sublayer_have_no_predictive_part():
    """Unpruned, the student's predictions are the teacher's: the KL gradient is zero (as in the
    reference), only representational knowledge ranks units."""
    model, _ = tiny_encoder("bert", seed=4)
    model.requires_grad_(False)
    adapter = adapter_for(model)
    batched = _batches(n=2)
    subs = sublayers(model, adapter, encoder_flops(model, adapter, 14))
    soft, _ = teacher_pass(model, subs, batched, T)
    state = score_pass(model, subs, 0, batched, soft, T)
    assert all(float(g.abs().max()) < 1e-12 for g in state["grad"].values())


def _reference_threshold(scores, costs, budget):
    s = scores.sort().values
    thres = s[0]
    for f in range(len(s)):
        thres = s[f]
        if float(costs[scores > thres].sum()) < budget:
            break
    return thres


def test_mask_search_matches_the_reference_loop():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        scores = torch.randint(0, 30, (60,), generator=g).float()   # ties included
        costs = torch.where(torch.arange(60) < 12, 50.0, 3.0)       # 12 "heads", 48 "neurons"
        budget = float(torch.rand(1, generator=g)) * float(costs.sum())
        assert find_threshold(scores, costs, budget) == _reference_threshold(scores, costs, budget), trial


def test_weight_tuning_is_the_least_squares_solution():
    g = torch.Generator().manual_seed(1)
    z, x = torch.randn(200, 12, generator=g), torch.randn(200, 6, generator=g)
    target, bias = torch.randn(200, 6, generator=g), torch.randn(6, generator=g)
    keep = torch.tensor([True, False, True, True, False, True, True, True, False, True, False, True])
    ours = reconstruct(z, x, target, bias, keep)                                   # [6, 8]
    ref, *_ = np.linalg.lstsq(z[:, keep].double().numpy(), (target - x - bias).double().numpy(), rcond=None)
    assert ours.shape == (6, 8)
    np.testing.assert_allclose(ours.numpy(), ref.T, rtol=1e-8, atol=1e-10)
