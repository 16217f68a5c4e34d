"""Width pruning as LLM-Pruner's reference does it (horseee/LLM-Pruner hf_prune.py, block-wise,
taylor param_first, grouping_strategy sum): an attention group is a KV head with its query heads
(q/k/v rows + o columns; a single head on MHA models such as LLaMA-1/2-7B), an MLP group a
gate/up row + down column, group importance = sum over its weights of |w * dL/dw|. Checked on tiny
MHA and GQA models against that rule written out here; and the parameter count that plans the
widths equals the model's real count (Qwen2's q/k/v biases included)."""

from __future__ import annotations

import pytest
import torch

from harness import surgery
from harness.targets import Target
from methods.registry import build_method
from tests.conftest import make_tiny
from tests.parity.tiny import calibration, context, model_pair


def taylor_salience(model, ids) -> dict[str, torch.Tensor]:
    model.zero_grad()
    for start in range(0, ids.shape[0], 2):
        batch = ids[start:start + 2]
        model(batch, labels=batch, use_cache=False).loss.backward()
    out = {n: (p * p.grad).detach().abs() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


def reference_kept_groups(model, ids, n_keep: int) -> list[list[int]]:
    """Per block, the KV groups LLM-Pruner keeps: the n_keep with the largest summed |w * g|."""
    sal = taylor_salience(model, ids)
    cfg = model.config
    hd = cfg.head_dim
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    kept = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.self_attn."
        scores = []
        for g in range(cfg.num_key_value_heads):
            q_rows = slice(g * group * hd, (g + 1) * group * hd)
            kv_rows = slice(g * hd, (g + 1) * hd)
            scores.append(float(sal[p + "q_proj.weight"][q_rows].sum() + sal[p + "k_proj.weight"][kv_rows].sum()
                                + sal[p + "v_proj.weight"][kv_rows].sum() + sal[p + "o_proj.weight"][:, q_rows].sum()))
        kept.append(sorted(sorted(range(len(scores)), key=lambda g: -scores[g])[:n_keep]))
    return kept


@pytest.mark.parametrize("n_kv,ratio", [(4, 0.2), (2, 0.3)], ids=["mha", "gqa"])
def test_llm_pruner_prunes_whole_kv_groups_as_reference(n_kv, ratio):
    ours, ref = model_pair(num_key_value_heads=n_kv)
    calib = calibration()
    method = build_method("llm_pruner", {"latency_repeats": 0})
    report = method.prune(ours, context(ours, Target("width", "width", ratio), calib))
    cfg = ours.config
    assert cfg.num_key_value_heads < n_kv, "attention heads must be pruned"
    assert cfg.num_attention_heads // cfg.num_key_value_heads == 4 // n_kv   # groups stay whole
    want = reference_kept_groups(ref, calib.input_ids, cfg.num_key_value_heads)
    removed = report["removed"]["kv_groups"]
    assert [[g for g in range(n_kv) if g not in keep] for keep in want] == removed


@pytest.mark.parametrize("family,config", [("qwen2", {}), ("llama", {}), ("llama", {"attention_bias": True})],
                         ids=["qwen2", "llama", "llama-bias"])
def test_param_count_equals_real_count(family, config):
    model, _ = make_tiny(family, **config)
    assert surgery.llama_param_count(model.config) == sum(p.numel() for p in model.parameters())
