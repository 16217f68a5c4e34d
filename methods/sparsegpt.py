"""SparseGPT: OBS-style pruning with row reconstruction through the inverse layer Hessian.

Paper: Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot" (ICML 2023), arXiv:2301.00774.
Reference: https://github.com/IST-DASLab/sparsegpt (sparsegpt.py: SparseGPT.fasterprune).
Algorithm (as the reference): H = 2/n X^T X, dampened by percdamp * mean(diag H); upper Cholesky
factor of H^-1; columns processed in blocks of `blocksize` with lazy batched updates; the mask of
each column block is chosen adaptively from w^2 / [H^-1]_cc^2 (unstructured), or, for N:M, at the
start of every group of M columns the M-N lowest of that criterion are pruned in each row; each
pruned weight's error is propagated onto the not-yet-processed columns.
Differences from the reference:
- one Hessian per distinct input (q/k/v share theirs, gate/up share theirs; the collectors compute
  it once per group) and its damped inverse Cholesky factor is computed once per group too;
  `share_hessians=False` gives one Hessian per linear (the reference's cost, for the benchmark);
- exact counts: the unstructured selection prunes exactly int(rows*cols*sparsity) weights per
  layer, spread over the column blocks as int(rows*c2*s) - int(rows*c1*s); the reference's
  `tmp <= sort(tmp)[int(numel*s)]` also prunes the weight at the threshold, one more in every
  column block (more on ties), and propagates its error too. With the reference's mask rule
  replaced by exact-k, the sweep equals it bit for bit (tests/parity/test_weight_pruners.py); on
  SmolLM2's block 0 the two masks agree on 99.97% of the weights
  (benchmarks/bench_prune_time.py --share-only --reference-dir);
- "dead" inputs (zero Hessian diagonal) get H_jj = 1 as in the reference, but their weights are
  not zeroed beforehand (they compute nothing; zeroing them would break the exact count);
- H is accumulated as a plain sum scaled at the end (the reference rescales a running mean).
Same result, less work (not differences): linears sharing an input (q/k/v, gate/up) are swept as
one stacked matrix (`stack_shared`, the default; masks chosen per linear, lazy update per linear,
so bit-identical to one sweep per linear), and the column loop runs on the transposed block with
fewer tensor ops per column (bit-identical to the reference's loop; both tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.loop import BlockContext
from harness.blocks.masks import lowest_k
from harness.targets import Target
from methods.base import WeightPruner
from methods.registry import register
from methods.tags import Tags


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float, consume: bool = False) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*I)^-1 ([in, in], float32). `hessian` is not modified,
    unless `consume`: then the caller hands it over (and holds no other reference), and it is
    damped in place, so at most two [in, in] tensors are alive (1.6 GB for a 14336-wide input
    instead of 3.3 GB)."""
    h = hessian.detach() if consume and hessian.dtype == torch.float32 else hessian.detach().clone().float()
    del hessian
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    damp = percdamp * torch.mean(torch.diag(h))
    h.diagonal().add_(damp)
    h = torch.linalg.cholesky(h)
    h = torch.cholesky_inverse(h)
    return torch.linalg.cholesky(h, upper=True)


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float, n: int | None = None,
                    m: int | None = None, blocksize: int = 128, segments: list[int] | None = None) -> torch.Tensor:
    """Return the pruned-and-reconstructed weight [out, in] (float32).

    weight: [out, in]; hinv: upper Cholesky factor of the damped inverse Hessian [in, in];
    N:M keeps `n` of every `m` consecutive inputs (so m-n are pruned per group).
    `segments`: row counts of several linears sharing this input (hence H^-1), stacked in
    `weight`, reconstructed in one column sweep. Rows never mix in the sweep (a row's updates use
    only that row and H^-1), each segment's unstructured mask is chosen over its own rows with its
    own exact count, and the lazy update is one matmul per segment (the shape of that linear's own
    sweep, so the same BLAS summation order): each linear gets bit-for-bit what its own sweep gives.
    """
    w = weight.detach().clone().float()
    rows, cols = w.shape
    segments = segments or [rows]
    if sum(segments) != rows:
        raise ValueError(f"segments {segments} do not add up to {rows} rows")
    if n is not None and blocksize % m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={m}")
    for c1 in range(0, cols, blocksize):
        c2 = min(c1 + blocksize, cols)
        hinv1 = hinv[c1:c2, c1:c2]                           # [count, count]
        d = torch.diag(hinv1)                                # [count]
        if n is None:
            prune1 = _block_mask(w[:, c1:c2], d, sparsity, segments, c1, c2)
        else:
            prune1 = torch.zeros(rows, c2 - c1, dtype=torch.bool, device=w.device)
        q1, err1 = _sweep_block(w[:, c1:c2], hinv1, prune1, n, m)
        w[:, c1:c2] = q1
        r0 = 0
        for seg in segments:                                 # lazy batched update, per linear
            w[r0:r0 + seg, c2:] -= err1[r0:r0 + seg].matmul(hinv[c1:c2, c2:])
            r0 += seg
    return w


def _block_mask(w1: torch.Tensor, d: torch.Tensor, sparsity: float, segments: list[int], c1: int,
                c2: int) -> torch.Tensor:
    """Adaptive unstructured mask of one column block (True = prune), [rows, count]: the exact
    share int(seg*c2*s) - int(seg*c1*s) of each segment's (linear's) prune count, lowest
    w^2 / d^2 over that segment's rows only: the first k of a stable sort (ties in index order),
    found by selection (lowest_k), which is what dominated the unstructured sweep when sorted."""
    crit = w1.pow(2) / d.reshape(1, -1).pow(2)               # [rows, count]
    parts = []
    r0 = 0
    for seg in segments:
        k = int(seg * c2 * sparsity) - int(seg * c1 * sparsity)
        parts.append(lowest_k(crit[r0:r0 + seg].reshape(1, -1), k).reshape(seg, -1))   # [seg, count]
        r0 += seg
    return torch.cat(parts)


def _sweep_block(w1: torch.Tensor, hinv1: torch.Tensor, prune1: torch.Tensor, n: int | None,
                 m: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """OBS sweep over one column block: (pruned block q1, scaled errors err1), both [rows, count].

    Same arithmetic as the reference's loop (per column: e = pruned part / d_i, then subtract
    e (x) H^-1[i, i:]), in fewer Python-level tensor ops, which dominate at small widths: the
    block is transposed so a column is one contiguous row ([count, rows]); the update skips
    column i itself (only its pruned entries would change, and they are zeroed anyway), so a
    column is final once visited and q1 and err1 are read off at the end instead of copied
    column by column. Every element sees the same float operations in the same order, so the
    result is bit-identical to the column-by-column form (tests/methods/test_sparsegpt.py)."""
    wt = w1.t().contiguous()                                 # [count, rows]
    pt = prune1.t().contiguous()                             # [count, rows], True = prune
    kt = ~pt                                                 # [count, rows], True = keep
    # [count]; divided by as 0-dim tensors like the reference (on CUDA a Python-float divisor
    # becomes a multiply by its reciprocal: not bit-identical)
    diag = torch.diag(hinv1)
    step = (m - n) if n is not None else 0
    for i in range(wt.shape[0]):
        if step and i % m == 0:
            # N:M: at each group's first column, prune the m-n lowest w^2/d^2 of every row
            crit = wt[i:i + m].t().pow(2) / diag[i:i + m].reshape(1, -1).pow(2)   # [rows, m]
            idx = torch.topk(crit, step, dim=1, largest=False).indices            # [rows, m-n]
            pt.t().scatter_(1, i + idx, True)
            torch.logical_not(pt[i:i + m], out=kt[i:i + m])
        e = wt[i].masked_fill(kt[i], 0).div_(diag[i])                             # [rows]
        wt[i + 1:] -= hinv1[i, i + 1:, None] * e                                  # [count-i-1, rows]
    err1 = wt.masked_fill(kt, 0).div_(diag.reshape(-1, 1))                        # [count, rows]
    return wt.masked_fill_(pt, 0).t(), err1.t().contiguous()


@register
@dataclass
class SparseGPT(WeightPruner):
    name: ClassVar[str] = "sparsegpt"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Frantar & Alistarh 2023 (ICML), arXiv:2301.00774"
    listed: ClassVar[str] = "https://arxiv.org/abs/2301.00774"
    reference: ClassVar[str] = "https://github.com/IST-DASLab/sparsegpt"
    differences: ClassVar[str] = ("Hessian and its inverse factor shared per input group; exact-k "
                                  "selection; dead inputs not pre-zeroed")
    tags: ClassVar[Tags] = Tags("Un/Semi-structured", "Hessian", "Sparsity-layer", "Calibration",
                                "Without", "Update",
                                qualifier="second-order, N:M capable")
    statistics: ClassVar[tuple[str, ...]] = ("hessian",)
    updates_weights: ClassVar[bool] = True   # not a pure mask: weights are reconstructed

    blocksize: int = 128
    percdamp: float = 0.01
    share_hessians: bool = True
    stack_shared: bool = True    # q/k/v (gate/up) rows swept as one stacked matrix per shared H^-1 (same result)

    def __post_init__(self):
        if self.blocksize <= 0 or not 0.0 <= self.percdamp < 1.0:
            raise ValueError(f"sparsegpt needs blocksize > 0 and percdamp in [0, 1), got "
                             f"{self.blocksize}, {self.percdamp}")

    @property
    def share_statistics(self) -> bool:
        return self.share_hessians

    def prune_block(self, blk: BlockContext, target: Target) -> None:
        groups: dict[int, list[nn.Linear]] = {}   # id(shared stats dict) -> its linears, in order
        stats_of: dict[int, dict] = {}
        for name, linear in blk.linears.items():
            stats = blk.stats[name]
            key = id(stats) if self.share_hessians else id(linear)
            groups.setdefault(key, []).append(linear)
            stats_of[key] = stats
        for key, linears in groups.items():
            # the block's Hessian is not needed after its factor: hand it over
            hinv = inverse_hessian_factor(stats_of[key].pop("hessian"), self.percdamp, consume=True)
            if self.stack_shared and len(linears) > 1:
                self._prune_stacked(linears, hinv, blk.sparsity, target)
            else:
                for linear in linears:
                    self._prune(linear, hinv, blk.sparsity, target)
            del hinv

    @torch.no_grad()
    def _prune_stacked(self, linears: list[nn.Linear], hinv: torch.Tensor, sparsity: float, target: Target) -> None:
        rows = [lin.out_features for lin in linears]
        stacked = torch.cat([lin.weight.data.float() for lin in linears])     # [sum(out), in]
        new = sparsegpt_prune(stacked, hinv.to(stacked.device), sparsity, target.n, target.m, self.blocksize,
                              segments=rows)
        del stacked
        for lin, part in zip(linears, new.split(rows)):
            lin.weight.data.copy_(part.to(lin.weight.dtype))

    def prune_linear(self, name: str, linear: nn.Linear, stats: dict[str, torch.Tensor],
                     sparsity: float, target: Target) -> None:
        self._prune(linear, inverse_hessian_factor(stats["hessian"], self.percdamp), sparsity, target)

    @torch.no_grad()
    def _prune(self, linear: nn.Linear, hinv: torch.Tensor, sparsity: float, target: Target) -> None:
        new = sparsegpt_prune(linear.weight.data, hinv.to(linear.weight.device), sparsity, target.n,
                              target.m, self.blocksize)
        linear.weight.data.copy_(new.to(linear.weight.dtype))
