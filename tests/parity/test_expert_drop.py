"""Expert drop (SEER-MoE's soft-count heavy hitters; no public reference code, so this checks the
paper's stated algorithm as methods/expert_drop.py reconstructs it): an expert's importance is the
sum, over calibration tokens routed to it, of the gate weight the router gave it (the weight that
mixes its output), counted on the dense model; the same number of lowest-importance experts goes
in every MoE layer. The reference side reads the routing from a plain transformers forward
(`output_router_logits=True`: softmax over the experts, top-k, renormalised when the family does)
and shares nothing with harness/experts or the block capture."""

from __future__ import annotations

import pytest
import torch

from harness.targets import Target
from methods.registry import build_method
from tests.conftest import make_tiny_family
from tests.parity.tiny import calibration, context


def soft_counts(model, ids) -> list[torch.Tensor]:
    """Per MoE layer [E]: summed top-k gate weights over every token of the dense forward."""
    cfg = model.config
    k = cfg.num_experts_per_tok
    renorm = getattr(cfg, "norm_topk_prob", True)   # Mixtral always renormalises the top-k
    with torch.no_grad():
        logits = model(ids, output_router_logits=True, use_cache=False).router_logits   # L x [tokens, E]
    out = []
    for lg in logits:
        probs = torch.softmax(lg.double(), dim=-1)                   # [tokens, E]
        w, idx = torch.topk(probs, k, dim=-1)                        # [tokens, k]
        if renorm:
            w = w / w.sum(-1, keepdim=True)
        out.append(torch.zeros(lg.shape[-1], dtype=torch.float64).index_add_(0, idx.flatten(), w.flatten()))
    return out


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_expert_drop_removes_lowest_soft_count(family):
    model, _ = make_tiny_family(family, seed=1)
    calib = calibration(n=4, seq=32, vocab=250, seed=2)
    want_scores = soft_counts(model, calib.input_ids)
    ctx = context(model, Target("experts_50", "experts", 0.5), calib)
    report = build_method("expert_drop", {"latency_repeats": 0}).prune(model, ctx)["experts"]
    assert len(report) == len(want_scores)
    for i, scores in enumerate(want_scores):
        entry = report[ctx.adapter.block_prefix(i)]
        n_remove = len(scores) // 2
        want = sorted(torch.sort(scores, stable=True).indices[:n_remove].tolist())
        assert entry["removed"] == want, f"block {i}"
        # the soft counts agree to float32 rounding: the model's router softmax runs in float32,
        # the reference side recomputes it in float64 from the logits (~1e-8 relative per token)
        torch.testing.assert_close(torch.tensor(entry["importance"], dtype=torch.float64), scores,
                                   rtol=1e-6, atol=1e-6)
