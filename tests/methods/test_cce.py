"""CCE (reconstructed): importance by definition, least-squares compensation optimal on the
calibration intermediates, coupled removal, and the `reconstructed` mark in its description."""

from __future__ import annotations

import torch

from methods.cce import channel_scores, compensate, head_scores
from methods.registry import build_method


def test_scores_are_the_output_energy_of_each_component():
    g = torch.Generator().manual_seed(0)
    n_q, hd, D, T = 3, 4, 5, 400
    z = torch.randn(T, n_q * hd, generator=g).double()
    w_o = torch.randn(D, n_q * hd, generator=g).double()
    cov = z.t() @ z / T
    for h in range(n_q):
        cols = slice(h * hd, (h + 1) * hd)
        energy = (z[:, cols] @ w_o[:, cols].t()).pow(2).sum(1).mean()
        torch.testing.assert_close(head_scores(w_o, cov, n_q, hd)[h], energy)
    for j in range(n_q * hd):
        energy = (z[:, j:j + 1] @ w_o[:, j:j + 1].t()).pow(2).sum(1).mean()
        torch.testing.assert_close(channel_scores(w_o, cov)[j], energy)


def test_compensation_is_the_least_squares_fit_of_the_dense_output():
    g = torch.Generator().manual_seed(1)
    T, F, D = 500, 10, 6
    h = torch.randn(T, 4, generator=g) @ torch.randn(4, F, generator=g) + 0.1 * torch.randn(T, F, generator=g)
    h = h.double()
    w = torch.randn(D, F, generator=g).double()
    keep = torch.tensor([0, 2, 3, 5, 7, 8])
    comp = compensate(w, h.t() @ h / T, keep, damp=0.0)
    dense = h @ w.t()
    fit = torch.linalg.lstsq(h[:, keep], dense).solution.t()                # [D, K]
    torch.testing.assert_close(comp[:, keep], fit)
    err = lambda wk: float((dense - h[:, keep] @ wk.t()).pow(2).mean())
    assert err(comp[:, keep]) < err(w[:, keep])


def test_marked_reconstructed():
    d = build_method("cce").describe()
    assert d["fidelity"] == "reconstructed" and "not specified by the abstract" in d["differences"]
    assert build_method("sparsegpt").describe()["fidelity"] == "reference"
