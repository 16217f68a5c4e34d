"""LLM Surgeon: the Kronecker-OBS math equals a dense OBS with F = G (x) A written out in full,
the backward collector equals autograd, and the method meets its targets on a tiny model."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.backward import collect_backward_statistics
from harness.blocks.measure import measure_sparsity
from harness.targets import Target
from methods.llm_surgeon import (column_costs, correlated_update, damped_inverse, element_costs,
                                 global_structured_remove, row_chunks, row_costs, structured_update)
from methods.registry import build_method
from tests.conftest import make_tiny
from tests.methods.tiny_block_helpers import correlated_inputs, tiny_context

torch.set_default_dtype(torch.float32)


def _factors(R=6, C=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = correlated_inputs(200, C, seed)                       # [tokens, C]
    gr = torch.randn(200, R, generator=g) @ (torch.eye(R) + 0.4 * torch.randn(R, R, generator=g))
    A = (x.t() @ x / 200).double()
    G = (gr.t() @ gr / 200).double()
    W = torch.randn(R, C, generator=g).double()
    return W, damped_inverse(G, 0.1), damped_inverse(A, 0.01), G, A


def _dense_obs(w, finv, q):
    """Independent OBS: remove the flat indices q of vec(w) (row-major) under inverse curvature
    finv [RC, RC]: dw = -finv[:, q] finv[q, q]^-1 w[q]."""
    v = w.flatten().clone()
    dv = -finv[:, q] @ torch.linalg.inv(finv[q][:, q]) @ v[q]
    out = (v + dv).view_as(w)
    out.view(-1)[q] = 0.0
    return out


def test_damped_inverse_is_the_inverse_of_the_damped_matrix():
    _, _, _, G, _ = _factors()
    d = G + torch.eye(len(G), dtype=G.dtype) * 0.1 * G.diagonal().mean()
    torch.testing.assert_close(damped_inverse(G, 0.1) @ d, torch.eye(len(G), dtype=G.dtype), atol=1e-6, rtol=0)


def test_element_costs_equal_dense_obs_costs():
    W, ginv, ainv, _, _ = _factors()
    finv = torch.kron(ginv, ainv)                              # [RC, RC], row-major vec(W)
    dense = 0.5 * W.flatten() ** 2 / finv.diagonal()
    torch.testing.assert_close(element_costs(W, ginv, ainv).flatten(), dense)


def test_joint_update_equals_dense_obs():
    W, ginv, ainv, _, _ = _factors()
    remove = torch.rand(W.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    q = remove.flatten().nonzero()[:, 0]
    expect = _dense_obs(W, torch.kron(ginv, ainv), q)
    torch.testing.assert_close(correlated_update(W, remove, ginv, ainv, 0, True), expect)


def test_chunked_update_equals_sequential_dense_obs():
    """Chunks of whole rows, each removing its weights from the weights already updated by the
    earlier chunks (`addupdate`); the dense reference applies OBS chunk after chunk."""
    W, ginv, ainv, _, _ = _factors(R=7, C=8, seed=1)
    remove = torch.rand(W.shape, generator=torch.Generator().manual_seed(4)) < 0.6
    qr, qc = remove.nonzero(as_tuple=True)
    finv = torch.kron(ginv, ainv)
    cur = W.clone().flatten()
    for sl in row_chunks(qr, 9):
        q = qr[sl] * W.shape[1] + qc[sl]
        cur = cur - finv[:, q] @ torch.linalg.solve(finv[q][:, q], cur[q])
    expect = cur.view_as(W).clone()
    expect[remove] = 0.0
    torch.testing.assert_close(correlated_update(W, remove, ginv, ainv, 9, True), expect)
    assert len(row_chunks(qr, 9)) > 1


def test_row_chunks_follow_the_reference_grouping():
    rows = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3])
    sizes = [s.stop - s.start for s in row_chunks(rows, 5)]
    assert sizes == [5, 5, 1]          # rows 0+1, row 2 (exactly 5), row 3
    assert [s.stop - s.start for s in row_chunks(rows, 4)] == [3, 2, 5, 1]   # long row alone
    assert [s.stop - s.start for s in row_chunks(rows, 0)] == [11]


def test_structured_update_and_costs_equal_dense_obs():
    W, ginv, ainv, G, A = _factors()
    R, C = W.shape
    finv = torch.kron(ginv, ainv)
    rows, cols = torch.tensor([1, 4]), torch.tensor([2, 5, 6])
    q_rows = (rows[:, None] * C + torch.arange(C)).flatten()
    q_cols = (torch.arange(R)[:, None] * C + cols).flatten()
    torch.testing.assert_close(structured_update(W, rows, torch.tensor([], dtype=torch.long), ginv, ainv),
                               _dense_obs(W, finv, q_rows))
    torch.testing.assert_close(structured_update(W, torch.tensor([], dtype=torch.long), cols, ginv, ainv),
                               _dense_obs(W, finv, q_cols))
    # costs: 1/2 w_Q^T [finv_QQ]^-1 w_Q with the damped factors (the reference passes A and G
    # undamped next to damped inverses; with damped ones both formulas agree exactly)
    a_d, g_d = torch.linalg.inv(ainv), torch.linalg.inv(ginv)
    v = W.flatten()
    for r in range(R):
        q = torch.arange(C) + r * C
        torch.testing.assert_close(row_costs(W, a_d, ginv)[r], 0.5 * v[q] @ torch.linalg.solve(finv[q][:, q], v[q]))
    for c in range(C):
        q = torch.arange(R) * C + c
        torch.testing.assert_close(column_costs(W, g_d, ainv)[c], 0.5 * v[q] @ torch.linalg.solve(finv[q][:, q], v[q]))


def test_structured_threshold_counts_crossing_weights_once():
    rc = [torch.tensor([0.1, 5.0, 6.0]), torch.tensor([0.2, 7.0])]
    cc = [torch.tensor([0.3, 8.0]), torch.tensor([9.0, 0.05, 9.5])]
    # layer 0 is 3x2, layer 1 is 2x3; total 12 weights
    rr, cr = global_structured_remove(rc, cc, 0.5)           # budget 6 weights
    removed = sum(int(r.sum()) * len(c) + int(cm.sum()) * len(r) - int(r.sum()) * int(cm.sum())
                  for r, cm, c in zip(rr, cr, cc))
    assert removed <= 6
    # threshold 0.2: layer0 row0 (2 weights) + layer1 col1 (2) + row0 (3) - crossing (1) = 6
    assert rr[0].tolist() == [True, False, False] and rr[1].tolist() == [True, False]
    assert cr[1].tolist() == [False, True, False] and cr[0].tolist() == [False, False]


def test_backward_collector_equals_autograd():
    model, _ = make_tiny("llama")
    adapter = adapter_for(model)
    block = adapter.blocks(model)[1]
    lin = adapter.linears(block)["mlp.down_proj"]
    ids = torch.randint(0, 250, (3, 16), generator=torch.Generator().manual_seed(0))
    stats, _ = collect_backward_statistics(model, {"d": lin}, [("d",)], ids,
                                           ("input_cov", "output_grad_cov"), batch_size=1)
    xs, gs = [], []
    for i in range(3):
        seen = {}
        h = lin.register_forward_hook(lambda m, a, o: seen.update(x=a[0].detach(), out=o))
        loss = model(ids[i:i + 1], labels=ids[i:i + 1]).loss
        h.remove()
        g, = torch.autograd.grad(loss, seen["out"])
        xs.append(seen["x"].reshape(-1, lin.in_features))
        gs.append(g.reshape(-1, lin.out_features))
    x, g = torch.cat(xs), torch.cat(gs)
    torch.testing.assert_close(stats["d"]["input_cov"], x.t() @ x / len(x), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(stats["d"]["output_grad_cov"], g.t() @ g / len(g), rtol=1e-4, atol=1e-12)
    assert all(not p.grad is not None for p in model.parameters())


def test_rows_cols_target_zeroes_whole_rows_and_columns():
    target = Target("rows_cols_20", "rows_cols", 0.2)
    model, adapter, ctx = tiny_context(target)
    method = build_method("llm_surgeon", {"shots": 2})
    method.check(model, ctx)
    report = method.prune(model, ctx)
    assert report["resolved_params"]["shots"] == 2 and len(report["shots"]) == 2
    m = measure_sparsity(model, adapter)
    assert 0.15 < m["sparsity_blocks"] <= 0.2 + 1e-9
    for block in adapter.blocks(model):
        for lin in adapter.linears(block).values():
            w = lin.weight
            zero_rows, zero_cols = (w == 0).all(1), (w == 0).all(0)
            structured = zero_rows[:, None] | zero_cols[None, :]
            assert torch.equal(w == 0, structured), "zeros outside whole rows/columns"
    assert torch.isfinite(model(torch.randint(0, 250, (1, 8))).logits).all()



@pytest.mark.parametrize("addupdate", [True, False])
def test_rowwise_fast_path_equals_the_chunk_loop(addupdate):
    from methods import llm_surgeon

    W, ginv, ainv, _, _ = _factors(R=9, C=12, seed=2)
    remove = torch.rand(W.shape, generator=torch.Generator().manual_seed(5)) < 0.5
    remove[3] = False                                         # a row with nothing removed
    fast = llm_surgeon.rowwise_update(W, remove, ginv, ainv, addupdate, factor_batch=4)
    qr, qc = remove.nonzero(as_tuple=True)
    finv = torch.kron(ginv, ainv)
    cur, base = W.clone().flatten(), W.flatten()
    for r in qr.unique():
        q = r * W.shape[1] + qc[qr == r]
        src = cur if addupdate else base
        cur = cur - finv[:, q] @ torch.linalg.solve(finv[q][:, q], src[q])
    expect = cur.view_as(W).clone()
    expect[remove] = 0.0
    # the batched factorisation runs in float32 where it is well conditioned
    torch.testing.assert_close(fast, expect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(correlated_update(W, remove, ginv, ainv, 1, addupdate), expect, rtol=1e-4, atol=1e-5)


def test_piecewise_update_equals_stepwise_dense_obs():
    """Step p removes the p-th piece of every row, each row's piece solved alone against the
    weights updated by the earlier steps; the per-row updates of one step are summed."""
    from methods.llm_surgeon import piecewise_update

    W, ginv, ainv, _, _ = _factors(R=7, C=12, seed=3)
    remove = torch.rand(W.shape, generator=torch.Generator().manual_seed(6)) < 0.6
    remove[2] = False
    finv = torch.kron(ginv, ainv)
    cur = W.clone().flatten()
    C = W.shape[1]
    pieces = {int(r): remove[r].nonzero()[:, 0] for r in range(W.shape[0]) if remove[r].any()}
    for p0 in range(0, C, 3):
        delta = torch.zeros_like(cur)
        for r, cols in pieces.items():
            q = r * C + cols[p0:p0 + 3]
            if len(q):
                delta -= finv[:, q] @ torch.linalg.solve(finv[q][:, q], cur[q])
        cur = cur + delta
    expect = cur.view_as(W).clone()
    expect[remove] = 0.0
    torch.testing.assert_close(piecewise_update(W, remove, ginv, ainv, 3, row_batch=2), expect,
                               rtol=1e-5, atol=1e-6)
