"""Activation-based width pruning, checked against the papers' stated rules written out here with
plain hooks on the dense model (module names of the HF LLaMA, nothing from harness/width's scoring):

- Minitron (Muralidharan et al. 2024, Sec. 3-4; reference NVIDIA Model-Optimizer mcore_minitron):
  MLP neuron = |activation entering down_proj|, head = L2 norm of its attention output (o_proj
  input slice), embedding channel = |LayerNorm output| summed over every norm; per batch the mean
  over the sequence, then the L2 norm over the batch (the paper's best aggregation); the
  highest-importance units are kept, the same widths in every block.
- CCE (Zhang et al. 2024, Findings of NAACL; no public reference, so this checks the abstract's
  algorithm as methods/cce.py reconstructs it, see its `differences`): a component's importance is
  the energy it sends through its consumer column (MLP channel j: ||W_down[:, j]||^2 E[h_j^2];
  head h: E||W_o,h z_h||^2), and the consumer's kept columns absorb the removed ones by damped
  least squares on the calibration intermediates, here solved as an explicit ridge regression.
"""

from __future__ import annotations

import pytest
import torch

from harness.targets import Target
from methods.registry import build_method
from tests.parity.tiny import calibration, context, model_pair


def top(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(torch.sort(scores, descending=True, stable=True).indices[:k].tolist())


def minitron_scores(model, ids):
    """heads [L, n_q], mlp [L, F], hidden [D], one calibration sequence per batch (batch 1)."""
    cfg = model.config
    n_q, hd = cfg.num_attention_heads, cfg.head_dim
    L = cfg.num_hidden_layers
    heads = torch.zeros(L, n_q, dtype=torch.float64)
    mlp = torch.zeros(L, cfg.intermediate_size, dtype=torch.float64)
    hidden = torch.zeros(cfg.hidden_size, dtype=torch.float64)
    cur = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda _m, a, i=i: cur.__setitem__(("h", i), a[0].double().view(*a[0].shape[:2], n_q, hd).norm(dim=-1))))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda _m, a, i=i: cur.__setitem__(("m", i), a[0].double().abs())))
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            hooks.append(norm.register_forward_hook(lambda _m, _a, o: cur.setdefault("n", []).append(o.double().abs())))
    hooks.append(model.model.norm.register_forward_hook(lambda _m, _a, o: cur.setdefault("n", []).append(o.double().abs())))
    with torch.no_grad():
        for row in ids:
            cur.clear()
            model(row.unsqueeze(0), use_cache=False)
            for i in range(L):   # [1, seq, k] -> mean over seq -> squared (L2 over the batch below)
                heads[i] += cur[("h", i)].mean(1).pow(2).sum(0)
                mlp[i] += cur[("m", i)].mean(1).pow(2).sum(0)
            hidden += sum(cur["n"]).mean(1).pow(2).sum(0)
    for h in hooks:
        h.remove()
    return heads.sqrt(), mlp.sqrt(), hidden.sqrt()


@pytest.mark.parametrize("axes", ["mlp,hidden", "heads,mlp,hidden"])
def test_minitron_keeps_highest_activation_units(axes):
    ours, ref = model_pair(num_key_value_heads=4 if "heads" in axes else 2)
    calib = calibration()
    ctx = context(ours, Target("width_25", "width", 0.25), calib)
    params = {"latency_repeats": 0} | ({} if axes == "mlp,hidden" else {"axes": axes})
    report = build_method("minitron", params).prune(ours, ctx)
    plan, removed = report["width_plan"], report["removed"]
    heads, mlp, hidden = minitron_scores(ref, calib.input_ids)
    keep_hidden = top(hidden, plan["hidden"])
    assert plan["hidden"] < ref.config.hidden_size and plan["intermediate"] < ref.config.intermediate_size
    assert removed["hidden_channels"] == [c for c in range(ref.config.hidden_size) if c not in keep_hidden]
    for i, (o, r) in enumerate(zip(ours.model.layers, ref.model.layers)):
        keep_mlp = top(mlp[i], plan["intermediate"])
        assert torch.equal(o.mlp.gate_proj.weight, r.mlp.gate_proj.weight[keep_mlp][:, keep_hidden]), i
        assert torch.equal(o.mlp.down_proj.weight, r.mlp.down_proj.weight[keep_hidden][:, keep_mlp]), i
    if "heads" in axes:   # MHA here: a KV group is one head, scored by its own importance
        assert ours.config.num_key_value_heads < 4
        want = [[g for g in range(4) if g not in top(heads[i], plan["kv_groups"])] for i in range(len(heads))]
        assert removed["kv_groups"] == want


def consumer_inputs(model, ids):
    """Per block, every calibration token's o_proj input [T, n_q*hd] and down_proj input [T, F]."""
    got = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for key, mod in (("o", layer.self_attn.o_proj), ("d", layer.mlp.down_proj)):
            hooks.append(mod.register_forward_pre_hook(
                lambda _m, a, k=(key, i): got.setdefault(k, []).append(a[0].reshape(-1, a[0].shape[-1]).double())))
    with torch.no_grad():
        for row in ids:
            model(row.unsqueeze(0), use_cache=False)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def ridge_absorb(w, x, keep, damp):
    """Kept columns W_K' minimising ||x W^T - x_K W_K'^T||^2 + lam ||W_K' - W_K||^2 ... written as
    the regression of the removed columns' output on the kept inputs: W_K' = W_K + B with
    B = argmin ||x_R W_R^T - x_K B^T||^2 / T + lam ||B||^2, lam = damp * mean diag(x_K^T x_K / T)."""
    w = w.double()
    removed = [j for j in range(w.shape[1]) if j not in set(keep)]
    xk, xr = x[:, keep], x[:, removed]
    t = x.shape[0]
    lam = damp * (xk.pow(2).sum(0) / t).mean()
    # augmented least squares: [x_K / sqrt(T); sqrt(lam) I] B^T = [x_R W_R^T / sqrt(T); 0]
    a = torch.cat([xk / t ** 0.5, lam.sqrt() * torch.eye(len(keep), dtype=w.dtype)])
    b = torch.cat([xr @ w[:, removed].t() / t ** 0.5, torch.zeros(len(keep), w.shape[0], dtype=w.dtype)])
    bt = torch.linalg.lstsq(a, b).solution                            # [K, out]
    return w[:, keep] + bt.t()


def test_cce_follows_its_stated_algorithm():
    ours, ref = model_pair(num_key_value_heads=2)
    calib = calibration()
    ctx = context(ours, Target("width_25", "width", 0.25), calib)
    plan = build_method("cce", {"latency_repeats": 0}).prune(ours, ctx)["width_plan"]
    cfg = ref.config
    n_q, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    group = n_q // n_kv
    x = consumer_inputs(ref, calib.input_ids)
    assert plan["intermediate"] < cfg.intermediate_size and plan["q_per_group"] < group
    for i, (o, r) in enumerate(zip(ours.model.layers, ref.model.layers)):
        wd, h = r.mlp.down_proj.weight.double(), x[("d", i)]
        energy = wd.pow(2).sum(0) * h.pow(2).mean(0)                  # [F]
        keep = top(energy, plan["intermediate"])
        assert torch.equal(o.mlp.gate_proj.weight, r.mlp.gate_proj.weight[keep]), i
        # float32 storage of the compensated weights (the method solves in float64, then casts)
        torch.testing.assert_close(o.mlp.down_proj.weight.double(), ridge_absorb(wd, h, keep, 0.01),
                                   rtol=1e-5, atol=1e-6)
        wo, z = r.self_attn.o_proj.weight.double(), x[("o", i)]
        head_energy = torch.stack([(z[:, j * hd:(j + 1) * hd] @ wo[:, j * hd:(j + 1) * hd].t()).pow(2).sum(1).mean()
                                   for j in range(n_q)])             # [n_q]: E||W_o,h z_h||^2
        keep_h = [g * group + q for g in range(n_kv) for q in top(head_energy[g * group:(g + 1) * group],
                                                                 plan["q_per_group"])]
        cols = torch.cat([torch.arange(j * hd, (j + 1) * hd) for j in keep_h]).tolist()
        rows = cols
        assert torch.equal(o.self_attn.q_proj.weight, r.self_attn.q_proj.weight[rows]), i
        torch.testing.assert_close(o.self_attn.o_proj.weight.double(), ridge_absorb(wo, z, cols, 0.01),
                                   rtol=1e-5, atol=1e-6)
