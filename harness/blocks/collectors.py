"""Statistics of linear-layer inputs, accumulated by forward hooks during calibration.

One collector per *input group* (q/k/v share their input, gate/up share theirs), so a Hessian or
norm is computed once per distinct input and shared by the group's members. With several devices
(runtime.devices) each device's copy of the block has its own collectors, `merge`d onto the first
device's afterwards: equal to one device's up to float summation order.
"""

from __future__ import annotations

import torch

from harness.registry import Registry


def _add_sums(into, other) -> None:
    """Merge a collector that keeps a plain sum (`sum`) and a count (`n_samples`)."""
    into.sum += other.sum.to(into.sum.device)
    into.n_samples += other.n_samples


class InputNorm:
    """Wanda's per-input-channel scale: ||X_j||_2^2 / n_samples, accumulated over all tokens.
    `input_norm` = sqrt of it (the reference's `sqrt(scaler_row)`).

    Accumulated in the reference's order (locuslab/wanda lib/layerwrapper.py `add_batch`): per
    micro-batch, rescale the running mean by n / (n + b), then add torch.norm(X^T, dim=1)^2 / n.
    Summing every token's x^2 and dividing once is the same number in exact arithmetic but differs
    in the last float32 bits (up to ~3e-7 relative; two thirds of the channels on a tiny model),
    enough to flip near-tied weights, whose different pruning then feeds every later block."""

    name = "input_norm"

    def __init__(self, in_features: int, device):
        self.scaler_row = torch.zeros(in_features, dtype=torch.float32, device=device)  # [in]
        self.n_samples = 0

    def update(self, x: torch.Tensor) -> None:  # x: [batch, seq, in]
        b = x.shape[0]
        self.scaler_row *= self.n_samples / (self.n_samples + b)
        self.n_samples += b
        xt = x.reshape(-1, x.shape[-1]).t().float()                                     # [in, tokens]
        self.scaler_row += torch.norm(xt, p=2, dim=1) ** 2 / self.n_samples

    def merge(self, other: "InputNorm") -> None:
        """Add another device's share (runtime.devices): the running means weighted by count."""
        if other.n_samples:
            total = self.n_samples + other.n_samples
            self.scaler_row.mul_(self.n_samples / total).add_(other.scaler_row.to(self.scaler_row.device),
                                                              alpha=other.n_samples / total)
            self.n_samples = total

    def result(self) -> dict[str, torch.Tensor]:
        return {"input_norm": torch.sqrt(self.scaler_row), "input_sq_mean": self.scaler_row}


class InputSum:
    """DSnoT's expected input per channel on the reference's scale: the token sum divided by the
    number of calibration *sequences* (`sum_metric_row` of zyxxmu/DSnoT lib/layerwrapper.py), i.e.
    seq_len x E[x_j]. DSnoT's `update_threshold` is an absolute bound on this scale."""

    name = "input_sum"

    def __init__(self, in_features: int, device):
        self.sum = torch.zeros(in_features, dtype=torch.float32, device=device)  # [in]
        self.n_samples = 0

    def update(self, x: torch.Tensor) -> None:  # x: [batch, seq, in]
        self.n_samples += x.shape[0]
        self.sum += x.float().sum(dim=(0, 1))

    def merge(self, other: "InputSum") -> None:
        _add_sums(self, other)

    def result(self) -> dict[str, torch.Tensor]:
        return {"input_sum": self.sum / max(self.n_samples, 1)}


class InputVariance:
    """Per-channel variance of the inputs as DSnoT's reference keeps it: the population variance
    over the tokens of each calibration sequence, averaged over sequences (the reference's hook
    sees one sequence per forward and pools the per-forward variances by token count). It is not
    the variance over all tokens (that would add the spread of the per-sequence means)."""

    name = "input_var"

    def __init__(self, in_features: int, device):
        self.sum = torch.zeros(in_features, dtype=torch.float64, device=device)  # [in]
        self.n_samples = 0

    def update(self, x: torch.Tensor) -> None:  # x: [batch, seq, in]
        self.n_samples += x.shape[0]
        self.sum += x.float().var(dim=1, unbiased=False).double().sum(dim=0)

    def merge(self, other: "InputVariance") -> None:
        _add_sums(self, other)

    def result(self) -> dict[str, torch.Tensor]:
        return {"input_var": (self.sum / max(self.n_samples, 1)).float()}


class Hessian:
    """SparseGPT's layer Hessian H = 2/n * sum_samples X^T X  ([in, in], float32)."""

    name = "hessian"

    def __init__(self, in_features: int, device):
        self.xtx = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.n_samples = 0

    def update(self, x: torch.Tensor) -> None:  # x: [batch, seq, in]
        self.n_samples += x.shape[0]
        flat = x.reshape(-1, x.shape[-1]).float()  # [tokens, in]
        self.xtx.addmm_(flat.t(), flat)

    def merge(self, other: "Hessian") -> None:
        self.xtx += other.xtx.to(self.xtx.device)
        self.n_samples += other.n_samples

    def result(self) -> dict[str, torch.Tensor]:
        # scaled in place: a second [in, in] copy is 0.8 GB for a 14336-wide down_proj
        return {"hessian": self.xtx.mul_(2.0 / max(self.n_samples, 1))}


# statistic name (a WeightPruner's `statistics`) -> collector factory(in_features, device)
COLLECTORS: Registry = Registry("statistic", {"input_norm": InputNorm, "hessian": Hessian,
                                              "input_sum": InputSum, "input_var": InputVariance})


def make_collector(name: str, in_features: int, device):
    return COLLECTORS.get(name)(in_features, device)
