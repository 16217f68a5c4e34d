"""DSnoT equals zyxxmu/DSnoT's default run (README command: initial_method wanda, max_cycle_time 50,
update_threshold 0.1, pow_of_var_regrowing 1; main.py defaults skip_layer=mlp,
without_same_sign=True), checked mask for mask on a tiny model against the algorithm written out
row by row below from the paper (Alg. 1) and the reference's documented behaviour."""

from __future__ import annotations

import torch

from methods.registry import build_method
from tests.parity.reference_pipeline import run_reference
from tests.parity.tiny import WIDE, context, masks, model_pair, unstructured


def reference_row(c, var, wanda, sparsity, max_cycles=50, threshold=0.1):
    """One row of DSnoT (unstructured). c: W * S (S = token sum / sequences) [in]; var [in];
    wanda: |W| ||x|| [in]. Returns the kept set."""
    c, var, wanda = c.tolist(), var.tolist(), wanda.tolist()
    cols = len(c)
    order = sorted(range(cols), key=lambda j: (wanda[j], j))
    k = int(cols * sparsity)
    pruned, kept = order[:k], order[k:]
    keep = set(kept)
    err = sum(c[j] for j in pruned)
    # grow list: pruned weights by c/Var ascending; take from the top while e > 0, else the bottom
    grow = sorted(pruned, key=lambda j: (c[j] / var[j], j))
    # prune list: kept weights, negative c by ascending Wanda, then positive c by descending Wanda;
    # take from the end (least important positive) while e < 0, else from the start
    neg = [j for j in kept if c[j] < 0]
    pos = [j for j in kept if c[j] > 0]
    prune = neg + pos[::-1]
    g_lo, g_hi, p_lo, p_hi = 0, len(grow) - 1, 0, len(prune) - 1
    for _ in range(max_cycles):
        if abs(err) <= threshold:           # checked before each swap; a stopped row stays stopped
            break
        assert g_lo <= g_hi and p_lo <= p_hi, "candidate list used up: widen the test layer"
        if err > 0:
            j, g_hi = grow[g_hi], g_hi - 1
        else:
            j, g_lo = grow[g_lo], g_lo + 1
        if err < 0:
            q, p_hi = prune[p_hi], p_hi - 1
        else:
            q, p_lo = prune[p_lo], p_lo + 1
        keep.add(j)
        keep.discard(q)
        err += c[q] - c[j]     # no same-sign stop (without_same_sign=True)
    return keep


def test_dsnot_default_masks_equal_reference_on_tiny_model():
    ours, ref = model_pair(seed=3, **WIDE)
    target = unstructured(0.6)
    method = build_method("dsnot")
    report = method.prune(ours, context(ours, target))
    swaps = {"n": 0}

    def prune_linear(_i, name, lin, st):
        w = lin.weight.data
        wanda = w.abs() * st.scaler_row.sqrt().reshape(1, -1)
        keep = torch.zeros_like(w, dtype=torch.bool)
        for r in range(w.shape[0]):
            row = wanda[r].tolist()
            base = sorted(range(w.shape[1]), key=lambda j: (row[j], j))[int(w.shape[1] * 0.6):]
            if name.startswith("mlp."):     # skip_layer=mlp: the Wanda mask, unrefined
                kept = base
            else:
                kept = reference_row(w[r] * st.sum_row, st.var, wanda[r], 0.6)
                swaps["n"] += len(set(kept) - set(base))
            keep[r, sorted(kept)] = True
        lin.weight.data *= keep

    run_reference(ref, context(ref, target).calibration.input_ids, prune_linear)
    got, want = masks(ours), masks(ref)
    assert swaps["n"] > 100 and report["dsnot"]["swaps"] == swaps["n"]
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_dsnot_threshold_is_on_the_references_scale():
    """update_threshold bounds c = W * (token sum / sequences): with 32-token sequences the same
    threshold on E[x] (tokens) would be 32x looser and stop rows that the reference refines."""
    ours, _ = model_pair(seed=3, **WIDE)
    stats = {}
    method = build_method("dsnot")
    method.refine_linear = lambda lin, st, s: (stats.setdefault("st", st), 0)[1]   # capture block-0 stats; 0 swaps
    method.prune(ours, context(ours, unstructured(0.6)))
    x_sum, n = None, 0
    # independent: the block-0 q_proj input is the normalised embedding of each sequence
    emb = ours.model.embed_tokens(context(ours, unstructured(0.6)).calibration.input_ids)
    x = ours.model.layers[0].input_layernorm(emb)                 # [n, seq, d]
    x_sum, n = x.sum(dim=(0, 1)), x.shape[0]
    torch.testing.assert_close(stats["st"]["input_sum"], x_sum / n, rtol=1e-5, atol=1e-6)
    # Var: per-sequence population variance, averaged over sequences
    torch.testing.assert_close(stats["st"]["input_var"], x.var(dim=1, unbiased=False).mean(0), rtol=1e-5, atol=1e-6)
