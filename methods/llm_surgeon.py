"""The LLM Surgeon: multi-shot pruning with Kronecker-factored curvature and correlated updates.

Paper: van der Ouderaa, Nagel, van Baalen, Asano, Blankevoort, "The LLM Surgeon", ICLR 2024,
arXiv:2312.17244.
Reference: https://github.com/Qualcomm-AI-research/llm-surgeon (surgeon.py, curvature.py KFAC with
--use_iad, pruner.py, threshold.py).

Per shot k = 1..shots (linear schedule: shot sparsity k * ratio / shots):
 1. curvature of the current model: for every block linear, K-FAC factors of the empirical Fisher
    A = E[x x^T] (input) and G = E[g g^T] (loss gradient w.r.t. the output), from a calibration
    forward and backward pass (harness.blocks.backward);
 2. damped inverses Ginv = (G + damp_g mean(diag G) I)^-1, Ainv likewise with damp_a;
 3. removal costs (OBS with F = G (x) A): element 1/2 w^2 / (Ginv_ii Ainv_jj); row
    1/2 w_r A w_r^T / Ginv_rr; column 1/2 w_c^T G w_c / Ainv_cc; an N:M group costs the sum of its
    (M-N) cheapest elements;
 4. one global threshold over all block linears meets the shot's sparsity (structured: counted in
    weights removed, a removed row and column sharing their crossing weight);
 5. correlated weight update of each linear for its removed set Q (the OBS solution restricted to
    Kronecker curvature): dW = -Ginv E_Q^T [E_Q (Ginv (x) Ainv) E_Q^T]^-1 E_Q w, solved jointly for
    up to `max_correlate` weights at a time (consecutive rows, the reference's grouping), each
    chunk seeing the earlier chunks' updates (`addupdate`). Rows: dW = -Ginv[:,R] Ginv[R,R]^-1 W[R];
    columns: dW = -W[:,C] Ainv[C,C]^-1 Ainv[C,:]. Removed weights are then set to exactly zero.
Dead rows/columns (all-zero weights or zero curvature diagonal) are zeroed and left out, as in the
reference.

Reference runs (its scripts/): unstructured and 2:4 use 5 shots, max_correlate 2000, addupdate,
damp_g 0.1, damp_a 0.01; structured rows+columns use 40 shots, all rows / all columns correlated
at once, no addupdate, damp_g = damp_a = 0.01. `None` parameters take these per-structure
defaults; the resolved values are in the prune report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.backward import collect_backward_statistics
from harness.blocks.context import PruneContext
from methods.base import Method, check_nm_divisible
from methods.registry import register
from methods.tags import Tags

# the reference's scripts, per structure: (shots, max_correlate, addupdate, damp_g, damp_a)
REFERENCE_RUNS = {"unstructured": (5, 2000, True, 0.1, 0.01), "nm": (5, 2000, True, 0.1, 0.01),
                  "rows_cols": (40, 0, False, 0.01, 0.01)}


# ---------------------------------------------------------------------------------------------
# the per-layer math (float64; shapes: W [R, C], G [R, R], A [C, C])

def damped_inverse(m: torch.Tensor, perc_damp: float) -> torch.Tensor:
    """(M + perc_damp * mean(diag M) * I)^-1 through Cholesky, float64."""
    m = m.double()
    damped = m + torch.eye(len(m), dtype=m.dtype, device=m.device) * perc_damp * m.diagonal().mean()
    return torch.cholesky_inverse(torch.linalg.cholesky(damped))


def element_costs(w: torch.Tensor, ginv: torch.Tensor, ainv: torch.Tensor) -> torch.Tensor:
    """OBS cost of removing each weight alone: 1/2 w^2 / [F^-1]_ii with F^-1 = Ginv (x) Ainv."""
    return 0.5 * w.double().pow(2) / torch.outer(ginv.diagonal(), ainv.diagonal())


def row_costs(w: torch.Tensor, a: torch.Tensor, ginv: torch.Tensor) -> torch.Tensor:
    """[R]: 1/2 w_r A w_r^T / Ginv_rr (A undamped, as the reference)."""
    w = w.double()
    return 0.5 * ((w @ a.double()) * w).sum(1) / ginv.diagonal()


def column_costs(w: torch.Tensor, g: torch.Tensor, ainv: torch.Tensor) -> torch.Tensor:
    """[C]: 1/2 w_c^T G w_c / Ainv_cc (G undamped, as the reference)."""
    w = w.double()
    return 0.5 * ((g.double() @ w) * w).sum(0) / ainv.diagonal()


def row_chunks(rows: torch.Tensor, max_correlate: int) -> list[slice]:
    """Split row-major removed entries (their row indices `rows`) into chunks of whole rows with
    at most `max_correlate` entries (a longer row is a chunk of its own); 0 = one chunk."""
    if rows.numel() == 0:
        return []
    if max_correlate <= 0:
        return [slice(0, rows.numel())]
    counts = torch.unique_consecutive(rows, return_counts=True)[1].tolist()
    chunks, start, size = [], 0, 0
    for n in counts:
        if size and size + n > max_correlate:
            chunks.append(slice(start, start + size))
            start, size = start + size, 0
        size += n
    chunks.append(slice(start, start + size))
    return chunks


def rowwise_update(w: torch.Tensor, remove: torch.Tensor, ginv: torch.Tensor, ainv: torch.Tensor,
                   addupdate: bool, factor_batch: int = 64) -> torch.Tensor:
    """`correlated_update` when every chunk is one row (what max_correlate <= the shortest row
    gives), organised for speed: for row r with removed columns S, C = Ginv_rr Ainv[S, S], so the
    Cholesky factors of all Ainv[S, S] (padded with identity to a common size) are computed in
    batches up front; the sequential part keeps U_j = Mat_j Ainv [n_rows, C] and reads the earlier
    rows' update at row k as Ginv[r_k, r_<k] U_<k. Same result as the chunk loop (tested)."""
    w = w.double()
    rows = remove.any(1).nonzero()[:, 0]                             # [n]
    if rows.numel() == 0:
        return w.clone()
    counts = remove[rows].sum(1)                                     # [n]
    smax = int(counts.max())
    # column indices of each row's removed entries, padded to smax (padding points at column 0)
    order = torch.sort(remove[rows].to(torch.int8), dim=1, descending=True, stable=True).indices[:, :smax]
    valid = torch.arange(smax).unsqueeze(0) < counts.unsqueeze(1)    # [n, smax]
    idx = torch.where(valid, order, torch.zeros_like(order))
    u = torch.zeros(len(rows), w.shape[1], dtype=w.dtype)            # [n, C]
    g_rows = ginv[rows][:, rows]                                     # [n, n]
    eye = torch.eye(smax, dtype=w.dtype)
    for b0 in range(0, len(rows), factor_batch):
        b1 = min(b0 + factor_batch, len(rows))
        bi, bv = idx[b0:b1], valid[b0:b1]
        m = ainv[bi.reshape(-1)].view(len(bi), smax, -1)             # [b, smax, C]
        m = torch.gather(m, 2, bi.unsqueeze(1).expand(-1, smax, -1))  # [b, smax, smax]
        both = bv.unsqueeze(2) & bv.unsqueeze(1)
        m = torch.where(both, m, eye.expand_as(m))                   # identity on the padding
        # the batched factorisation dominates the cost: float32 where it is well conditioned,
        # float64 for the batch otherwise
        chol, info = torch.linalg.cholesky_ex(m.float())
        chol = chol.double() if not bool(info.any()) else torch.linalg.cholesky(m)
        for k in range(b0, b1):
            s = idx[k, :counts[k]]
            e = w[rows[k], s]
            if addupdate and k:
                e = e - (g_rows[k, :k] @ u[:k])[s]
            rhs = torch.zeros(smax, 1, dtype=w.dtype)
            rhs[:counts[k], 0] = e
            lam = torch.cholesky_solve(rhs, chol[k - b0])[:counts[k], 0] / ginv[rows[k], rows[k]]
            u[k] = lam @ ainv[s]
    out = w - ginv[:, rows] @ u
    out[remove] = 0.0
    return out


def piecewise_update(w: torch.Tensor, remove: torch.Tensor, ginv: torch.Tensor, ainv: torch.Tensor,
                     piece: int, row_batch: int = 256) -> torch.Tensor:
    """A batched ordering of the correlated update (`piece_size`; not the reference's): each row's
    removed weights are split, in column order, into pieces of at most `piece`; step p solves the
    p-th piece of every row at once (rows independent within a step, as if each row were its own
    chunk) from the weights already updated by steps < p (`addupdate` across steps). Cost: one
    batch of piece x piece factorisations per step instead of one |row| x |row| system per row."""
    w = w.double()
    rows = remove.any(1).nonzero()[:, 0]                             # [n]
    if rows.numel() == 0:
        return w.clone()
    counts = remove[rows].sum(1)                                     # [n]
    order = torch.sort(remove[rows].to(torch.int8), dim=1, descending=True, stable=True).indices
    dw = torch.zeros_like(w)
    a32 = ainv.float()
    for p0 in range(0, int(counts.max()), piece):
        k = (counts - p0).clamp(0, piece)                            # [n] entries in this piece
        ri = (k > 0).nonzero()[:, 0]
        width = min(piece, w.shape[1] - p0)
        mat = torch.zeros(len(ri), w.shape[1], dtype=w.dtype)        # [b, C]: lambda scattered
        for b0 in range(0, len(ri), row_batch):
            sel = ri[b0:b0 + row_batch]
            valid = torch.arange(width).unsqueeze(0) < k[sel].unsqueeze(1)           # [b, K]
            idx = torch.where(valid, order[sel, p0:p0 + width], torch.zeros_like(order[sel, p0:p0 + width]))
            r = rows[sel]
            e = torch.gather(w[r] + dw[r], 1, idx) * valid                          # [b, K]
            # [b, K, K] = Ainv[S_b, S_b], indexed directly: gathering whole rows first ([b*K, C])
            # moved ~C/K times more memory and was most of a 2:4 shot's time
            m = a32[idx.unsqueeze(2), idx.unsqueeze(1)]
            both = valid.unsqueeze(2) & valid.unsqueeze(1)
            eye = torch.eye(width, dtype=m.dtype)
            m = torch.where(both, m, eye.expand_as(m))                              # identity padding
            chol, info = torch.linalg.cholesky_ex(m)
            chol = chol.double() if not bool(info.any()) else torch.linalg.cholesky(m.double())
            lam = torch.cholesky_solve(e.unsqueeze(2), chol).squeeze(2)              # [b, K]
            lam = lam / ginv[r, r].unsqueeze(1) * valid
            mat[b0:b0 + len(sel)].scatter_add_(1, idx, lam)          # padding adds 0
        dw -= ginv[:, rows[ri]] @ (mat @ ainv)                       # [R, C]
    out = w + dw
    out[remove] = 0.0
    return out


def correlated_update(w: torch.Tensor, remove: torch.Tensor, ginv: torch.Tensor, ainv: torch.Tensor,
                      max_correlate: int, addupdate: bool) -> torch.Tensor:
    """Weights after removing `remove` ([R, C] bool) with the Kronecker-OBS update (float64).

    Chunk q (entries Q_q): e = w_Q (+ the earlier chunks' update at Q with addupdate);
    lambda = [Ginv[Q_r, Q_r] * Ainv[Q_c, Q_c]]^-1 e; dW -= Ginv[:, Q_r] diag(lambda) Ainv[Q_c, :].
    The update is kept as P = sum_q Ginv[:, Q_r] Mat_q (dW = -P Ainv), so each chunk costs
    O(R*C*rows) instead of a full R*C*C product."""
    w = w.double()
    qr, qc = remove.nonzero(as_tuple=True)                     # row-major order
    chunks = row_chunks(qr, max_correlate)
    if chunks and all(int(qr[sl.start]) == int(qr[sl.stop - 1]) for sl in chunks):
        return rowwise_update(w, remove, ginv, ainv, addupdate)
    p = torch.zeros_like(w)                                    # [R, C]
    for sl in chunks:
        r, c = qr[sl], qc[sl]                                  # [Q]
        rows = torch.unique_consecutive(r)                     # this chunk's rows, ascending
        pos = torch.searchsorted(rows, r)                      # [Q]: row of each entry in `rows`
        e = w[r, c]
        if addupdate:
            e = e - (p[rows] @ ainv)[pos, c]                   # + earlier chunks' dW at Q
        cmat = ginv[r][:, r] * ainv[c][:, c]                   # [Q, Q]
        lam = torch.linalg.solve(cmat, e.unsqueeze(1)).squeeze(1)
        mat = torch.zeros(len(rows), w.shape[1], dtype=w.dtype)
        mat[pos, c] = lam
        p += ginv[:, rows] @ mat                               # [R, C]
    out = w - p @ ainv
    out[remove] = 0.0
    return out


def structured_update(w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ginv: torch.Tensor,
                      ainv: torch.Tensor, addupdate: bool = False) -> torch.Tensor:
    """Weights after removing rows `rows` and columns `cols` (index tensors), float64:
    dW_rows = -Ginv[:, R] Ginv[R, R]^-1 W[R, :],  dW_cols = -E[:, C] Ainv[C, C]^-1 Ainv[C, :] with
    E = W (or W + dW_rows with addupdate); both added, then the rows and columns set to zero."""
    w = w.double()
    dw = torch.zeros_like(w)
    if rows.numel():
        dw -= ginv[:, rows] @ torch.linalg.solve(ginv[rows][:, rows], w[rows])
        dw[rows] = -w[rows]
    if cols.numel():
        e = w[:, cols] + (dw[:, cols] if addupdate else 0)
        upd = -torch.linalg.solve(ainv[cols][:, cols], e.t()).t() @ ainv[cols]
        upd[:, cols] = -w[:, cols]
        dw += upd
    out = w + dw
    out[rows] = 0.0
    out[:, cols] = 0.0
    return out


# ---------------------------------------------------------------------------------------------
# global selection across layers

def global_element_keep(costs: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Prune exactly int(sparsity * total) weights with the lowest cost over all layers."""
    flat = torch.cat([c.flatten().float() for c in costs])
    k = int(flat.numel() * sparsity)
    remove = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        remove[torch.sort(flat, stable=True).indices[:k]] = True
    out, off = [], 0
    for c in costs:
        out.append(remove[off:off + c.numel()].view_as(c))
        off += c.numel()
    return out


def global_nm_remove(costs: list[torch.Tensor], sparsity: float, n: int, m: int) -> list[torch.Tensor]:
    """Shot of an N:M schedule: a group of M costs the sum of its M-N cheapest weights; the
    cheapest int(sparsity * M/(M-N) * groups) groups over all layers lose those M-N weights."""
    group_costs, orders = [], []
    for c in costs:
        srt, idx = torch.sort(c.reshape(-1, m).float(), dim=1, stable=True)   # [groups, M]
        group_costs.append(srt[:, :m - n].sum(1))
        orders.append(idx[:, :m - n])
    flat = torch.cat(group_costs)
    k = min(int(flat.numel() * sparsity * m / (m - n)), flat.numel())
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        chosen[torch.sort(flat, stable=True).indices[:k]] = True
    out, off = [], 0
    for c, order in zip(costs, orders):
        g = order.shape[0]
        remove = torch.zeros(g, m, dtype=torch.bool)
        sel = chosen[off:off + g]
        remove[sel] = remove[sel].scatter(1, order[sel], True)
        out.append(remove.view_as(c))
        off += g
    return out


def global_structured_remove(row_cost: list[torch.Tensor], col_cost: list[torch.Tensor],
                             sparsity: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One cost threshold over every layer's rows and columns, the largest whose removed weights
    (r*C + c*R - r*c per layer) stay within int(sparsity * total weights). Returns bool masks."""
    shapes = [(len(r), len(c)) for r, c in zip(row_cost, col_cost)]
    total = sum(R * C for R, C in shapes)
    budget = int(sparsity * total)
    per_layer = [torch.cat([r, c]).double() for r, c in zip(row_cost, col_cost)]
    every = torch.sort(torch.cat(per_layer)).values                     # candidate thresholds
    removed = torch.zeros_like(every)
    for (R, C), r, c in zip(shapes, row_cost, col_cost):
        nr = torch.searchsorted(torch.sort(r.double()).values, every, right=True).double()
        nc = torch.searchsorted(torch.sort(c.double()).values, every, right=True).double()
        removed += nr * C + nc * R - nr * nc
    ok = torch.nonzero(removed <= budget)
    if ok.numel() == 0:
        return [torch.zeros(R, dtype=torch.bool) for R, _ in shapes], [torch.zeros(C, dtype=torch.bool) for _, C in shapes]
    thr = every[int(ok.max())]
    return [r.double() <= thr for r in row_cost], [c.double() <= thr for c in col_cost]


# ---------------------------------------------------------------------------------------------

@dataclass
class _Layer:
    name: str
    linear: nn.Linear
    alive_rows: torch.Tensor      # [R] bool
    alive_cols: torch.Tensor      # [C] bool
    g: torch.Tensor               # sub-matrices over the alive rows / columns
    a: torch.Tensor


@register
@dataclass
class LLMSurgeon(Method):
    shots: int | None = None           # None: the reference script's count for the structure
    max_correlate: int | None = None   # weights solved jointly per chunk (0 = all); None: reference
    addupdate: bool | None = None      # chunks see the earlier chunks' updates; None: reference
    damp_g: float | None = None        # relative damping of G; None: reference
    damp_a: float | None = None        # relative damping of A; None: reference
    piece_size: int | None = None      # None: reference chunk order; K: batched pieces of K (CPU)

    name: ClassVar[str] = "llm_surgeon"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "van der Ouderaa et al. 2024, The LLM Surgeon, ICLR, arXiv:2312.17244"
    listed: ClassVar[str] = "https://arxiv.org/abs/2312.17244"
    reference: ClassVar[str] = "https://github.com/Qualcomm-AI-research/llm-surgeon"
    differences: ClassVar[str] = (
        "exact counts: exactly int(s*N) weights (or N:M groups) removed per shot, ties broken by a "
        "stable sort (the reference removes every cost <= the k-th, one or more extra); N:M groups "
        "remove exactly M-N weights (reference: every weight <= the group's (M-N)-th cost); "
        "calibration set and size from the run's calib config (reference: 128 x 2048 WikiText-2 "
        "tokens); structured target counts removed weights over the block linears (rows and "
        "columns of q/k/v/o/gate/up/down, zeroed, not physically removed), as the reference; "
        "no interleaved LoRA (reference default off); G/A norms not rebalanced (their product, "
        "all the method uses, is unchanged)")
    tags: ClassVar[Tags] = Tags("Un/Semi-/Structured", "Hessian-Approximation", "Sparsity-Global", "Calibration",
                                "Without", "Update", qualifier="K-FAC curvature, global threshold, "
                                "multi-shot; also N:M and rows/columns")
    patterns: ClassVar[frozenset[str]] = frozenset({"unstructured", "nm", "rows_cols"})
    updates_weights: ClassVar[bool] = True

    def __post_init__(self):
        if self.piece_size is not None and self.piece_size < 1:
            raise ValueError(f"llm_surgeon piece_size must be >= 1, got {self.piece_size}")
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"llm_surgeon shots must be >= 1, got {self.shots}")
        for k in ("damp_g", "damp_a"):
            v = getattr(self, k)
            if v is not None and not 0 < v < 10:
                raise ValueError(f"llm_surgeon {k} must be in (0, 10), got {v}")

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        check_nm_divisible(model, ctx)

    def resolved(self, pattern: str) -> dict:
        shots, mc, au, dg, da = REFERENCE_RUNS[pattern]
        pick = lambda v, d: d if v is None else v
        return {"shots": pick(self.shots, shots), "max_correlate": pick(self.max_correlate, mc),
                "addupdate": pick(self.addupdate, au), "damp_g": pick(self.damp_g, dg),
                "damp_a": pick(self.damp_a, da), "piece_size": self.piece_size}

    # -- one shot ---------------------------------------------------------------------------------
    def _curvature(self, model, ctx) -> tuple[list[_Layer], float]:
        adapter = ctx.adapter
        linears, groups = {}, []
        for i, block in enumerate(adapter.blocks(model)):
            lins = adapter.linears(block)
            for group in adapter.input_groups(block):
                members = tuple(f"{i}.{n}" for n in group if n in lins)
                if members:
                    groups.append(members)
                    linears.update({f"{i}.{n}": lins[n] for n in group if n in lins})
        stats, loss = collect_backward_statistics(model, linears, groups, ctx.calibration.input_ids,
                                                  ("input_cov", "output_grad_cov"), ctx.batch_size,
                                                  ctx.device)
        layers = []
        for name, lin in linears.items():
            w = lin.weight.detach()
            g, a = stats[name]["output_grad_cov"], stats[name]["input_cov"]
            rows = w.ne(0).any(1).cpu() & (g.diagonal() > 0).cpu()
            cols = w.ne(0).any(0).cpu() & (a.diagonal() > 0).cpu()
            layers.append(_Layer(name, lin, rows, cols, g[rows][:, rows].cpu(), a[cols][:, cols].cpu()))
        del stats
        return layers, loss

    @torch.no_grad()
    def _shot(self, layers: list[_Layer], sparsity: float, target, p: dict) -> None:
        full_costs, row_c, col_c = [], [], []
        for L in layers:   # pass 1: costs on the full shapes (dead weights cost 0)
            w = L.linear.weight.detach().cpu()
            sub = w[L.alive_rows][:, L.alive_cols]
            ginv, ainv = damped_inverse(L.g, p["damp_g"]), damped_inverse(L.a, p["damp_a"])
            if target.pattern == "rows_cols":
                rc = torch.zeros(w.shape[0], dtype=torch.float64)
                cc = torch.zeros(w.shape[1], dtype=torch.float64)
                rc[L.alive_rows] = row_costs(sub, L.a, ginv)
                cc[L.alive_cols] = column_costs(sub, L.g, ainv)
                row_c.append(rc)
                col_c.append(cc)
            else:
                c = torch.zeros(w.shape, dtype=torch.float32)
                c[L.alive_rows.nonzero()[:, :1], L.alive_cols.nonzero()[:, 0]] = \
                    element_costs(sub, ginv, ainv).float()
                full_costs.append(c)
        if target.pattern == "rows_cols":
            rrm, crm = global_structured_remove(row_c, col_c, sparsity)
        elif target.pattern == "nm":
            removes = global_nm_remove(full_costs, sparsity, target.n, target.m)
        else:
            removes = global_element_keep(full_costs, sparsity)
        del full_costs
        for i, L in enumerate(layers):   # pass 2: correlated updates
            lin = L.linear
            w = lin.weight.detach().cpu()
            sub = w[L.alive_rows][:, L.alive_cols]
            ginv, ainv = damped_inverse(L.g, p["damp_g"]), damped_inverse(L.a, p["damp_a"])
            if target.pattern == "rows_cols":
                rows = rrm[i][L.alive_rows].nonzero()[:, 0]
                cols = crm[i][L.alive_cols].nonzero()[:, 0]
                new_sub = structured_update(sub, rows, cols, ginv, ainv, p["addupdate"])
            else:
                rm = removes[i][L.alive_rows][:, L.alive_cols]
                new_sub = (piecewise_update(sub, rm, ginv, ainv, self.piece_size) if self.piece_size
                           else correlated_update(sub, rm, ginv, ainv, p["max_correlate"], p["addupdate"]))
            new = torch.zeros_like(w)
            new[L.alive_rows.nonzero()[:, :1], L.alive_cols.nonzero()[:, 0]] = new_sub.to(w.dtype)
            lin.weight.data.copy_(new.to(lin.weight.device, lin.weight.dtype))

    def prune(self, model: nn.Module, ctx: PruneContext) -> dict:
        if ctx.calibration is None:
            raise ValueError("llm_surgeon needs calibration data")
        target = ctx.target
        p = self.resolved(target.pattern)
        report = {"resolved_params": p, "shots": []}
        for k in range(1, p["shots"] + 1):
            s = k * target.ratio / p["shots"]
            t0 = time.perf_counter()
            layers, loss = self._curvature(model, ctx)
            t1 = time.perf_counter()
            self._shot(layers, s, target, p)
            del layers
            report["shots"].append({"shot": k, "sparsity": s, "calibration_loss_before": loss,
                                    "curvature_s": t1 - t0, "prune_s": time.perf_counter() - t1})
        return report
