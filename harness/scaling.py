"""Fit the sparse scaling law of Frantar et al. (ICLR 2024, arXiv:2309.08520) to run records.

    L(S, N, D) = (a_S (1 - S)^b_S + c_S) * (1 / N)^b_N + (a_D / D)^b_D + c

  S  sparsity of the block linears, measured on the stored weights (record measured.sparsity_blocks)
  N  non-zero non-embedding parameters (the paper's N; its fitting notebook counts the layers' weight
     matrices times (1 - S)): measured.params_block_linears * (1 - S), in millions
  D  training tokens (recovery.budget.train_tokens), in millions
  L  validation loss: mean token loss on held-out text never trained on (recovery.heldout_loss_after)

    python -m harness.scaling --results results/experiments/scaling [--plot fit.png] [--json fit.json]

The fit: scipy.optimize.least_squares on log residuals log L_fit - log L with a Huber loss of scale
1e-3 — the reference notebook's choice for language models ("we follow the procedure in the
Chinchilla paper with delta=0.001 and log=True"; google-research/jaxpruner,
jaxpruner/projects/bigsparse/sparsity-scaling.ipynb), from 25 seeded random starts in [0, 1]^7 as
there, with bounds keeping every coefficient >= 0 (exponents <= 4). Internally the data term is
e * D^-b_D (e = a_D^b_D, better conditioned; the notebook's form); a_D = e^(1/b_D) is reported.
Confidence intervals: percentile bootstrap over records (resampled with replacement, seeded), each
resample refitted from the full fit's coefficients. Any records of this shape fit, GPU sweeps at real
scale included; a record lacking a field is a one-line error naming the field and the file.

Optimal sparsity per compute budget: training FLOPs C = 6 * N_dense * D with N_dense = N / (1 - S)
(the model trains densely until pruning starts and the sparse phase runs dense kernels, so a
sparse run is charged as its dense shape). For a fixed number of non-zeros N and budget C,
D = C (1 - S) / (6 N); S_opt minimises L(S, N, C (1 - S) / (6 N)) over S in [0, 0.99].
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAMES = ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c")
N_UNIT, D_UNIT = 1e6, 1e6       # N in millions of non-zero parameters, D in millions of tokens
HUBER_SCALE = 1e-3              # on log L: the reference's language-model setting
STARTS = 25
# The record fields the law reads (dotted paths), and what each is.
FIELDS = {"measured.sparsity_blocks": "S", "measured.params_block_linears": "N_dense",
          "recovery.budget.train_tokens": "D", "recovery.heldout_loss_after": "L"}

# Published fits, as the paper's fitting notebook prints them (sparsity-scaling.ipynb outputs, in the
# notebook's form (a_S (1-S)^b_S + c_S) N^-b_N + e D^-b_D + c; a_D = e^(1/b_D) below). Units differ
# from ours: only the exponents b_S, b_N, b_D are unit-free and comparable across setups. The paper's
# own Table could not be read here (no copy of its full text was reachable); these are its code's.
REFERENCE = {
    "T5/C4 (N: 1e6 non-embedding non-zeros, D: 1e5 steps of 128 x 512 tokens)":
        {"a_S": 0.56778512, "b_S": 0.72161276, "c_S": 1.52265016, "b_N": 0.24513173,
         "e": 0.63361517, "b_D": 0.20270772, "c": 0.65074219},
    "ViT/JFT-4B (N: 1e6 non-zeros, D: 1e9 images)":
        {"a_S": 1.30485411, "b_S": 0.82101251, "c_S": 2.07506343, "b_N": 0.39222675,
         "e": 0.27818217, "b_D": 0.88979104, "c": 4.51669257},
}


class ScalingError(ValueError):
    """A record or a results folder that the law cannot be fitted to (one line)."""


@dataclass
class Points:
    S: np.ndarray          # [n] sparsity
    N: np.ndarray          # [n] non-zero non-embedding parameters (absolute)
    D: np.ndarray          # [n] training tokens (absolute)
    L: np.ndarray          # [n] held-out loss
    run_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.L)

    def take(self, idx: np.ndarray) -> "Points":
        return Points(self.S[idx], self.N[idx], self.D[idx], self.L[idx], [self.run_ids[i] for i in idx])


def _get(record: dict, path: str):
    node = record
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node or node[key] is None:
            raise KeyError(path)
        node = node[key]
    return node


def point(record: dict, where: str) -> tuple[float, float, float, float]:
    """(S, N, D, L) of one record; a missing or non-numeric field is a one-line ScalingError."""
    values = {}
    for path, name in FIELDS.items():
        try:
            values[name] = float(_get(record, path))
        except KeyError:
            raise ScalingError(f"{where}: missing field {path} ({name} of the scaling law)") from None
        except (TypeError, ValueError):
            raise ScalingError(f"{where}: field {path} is not a number") from None
        if not math.isfinite(values[name]):
            raise ScalingError(f"{where}: field {path} is not finite")
    s = values["S"]
    if not 0.0 <= s < 1.0 or values["N_dense"] <= 0 or values["D"] <= 0 or values["L"] <= 0:
        raise ScalingError(f"{where}: out of range (need 0 <= S < 1, N, D, L > 0): "
                           f"S={s} N_dense={values['N_dense']} D={values['D']} L={values['L']}")
    return s, values["N_dense"] * (1.0 - s), values["D"], values["L"]


def points_from_records(records: list[dict], where: list[str], name: str) -> Points:
    """(S, N, D, L) of every `ok` record (where[i] names records[i] in errors); more than 7 needed."""
    rows, ids = [], []
    for record, w in zip(records, where):
        if record.get("status") != "ok":
            continue
        rows.append(point(record, w))
        ids.append(str(record.get("run_id", w)))
    if len(rows) <= len(NAMES):
        raise ScalingError(f"{name}: {len(rows)} ok records; the 7-coefficient law needs more than 7")
    a = np.array(rows, dtype=float)        # [n, 4]: S, N, D, L
    return Points(a[:, 0], a[:, 1], a[:, 2], a[:, 3], ids)


def is_sweep(p: Points) -> bool:
    """A sweep the law can say something about: at least two values of each of S, N and D."""
    return all(len(set(np.round(v, 6).tolist())) >= 2 for v in (p.S, p.N / (1 - p.S), p.D))


def load_points(results: Path) -> Points:
    """Every `ok` record under <results>/records/*.json (or results itself, a folder of records)."""
    folder = results / "records" if (results / "records").is_dir() else results
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ScalingError(f"{results}: no records (*.json) found")
    records = []
    for f in files:
        try:
            records.append(json.loads(f.read_text()))
        except json.JSONDecodeError as exc:
            raise ScalingError(f"{f}: not JSON ({exc.msg})") from None
    return points_from_records(records, [str(f) for f in files], str(results))


# ---------------------------------------------------------------------------------------------
# the law and the fit

def _law_internal(theta: np.ndarray, S, N, D):
    """theta = (a_S, b_S, c_S, b_N, e, b_D, c); N and D in the fit's units (millions)."""
    a_s, b_s, c_s, b_n, e, b_d, c = theta
    return (a_s * (1.0 - S) ** b_s + c_s) * N ** (-b_n) + e * D ** (-b_d) + c


def law(coef: dict, S, N, D):
    """L(S, N, D) with the paper's coefficients (a_D form); N, D absolute counts."""
    e = coef["a_D"] ** coef["b_D"]
    theta = np.array([coef["a_S"], coef["b_S"], coef["c_S"], coef["b_N"], e, coef["b_D"], coef["c"]])
    return _law_internal(theta, np.asarray(S, float), np.asarray(N, float) / N_UNIT, np.asarray(D, float) / D_UNIT)


def _to_coef(theta: np.ndarray) -> dict:
    a_s, b_s, c_s, b_n, e, b_d, c = (float(x) for x in theta)
    a_d = e ** (1.0 / b_d) if b_d > 0 and e > 0 else 0.0
    return {"a_S": a_s, "b_S": b_s, "c_S": c_s, "b_N": b_n, "a_D": a_d, "b_D": b_d, "c": c}


LOWER = np.zeros(7)
UPPER = np.array([np.inf, 4.0, np.inf, 4.0, np.inf, 4.0, np.inf])


def _solve(p: Points, x0: np.ndarray):
    from scipy.optimize import least_squares

    S, N, D, logL = p.S, p.N / N_UNIT, p.D / D_UNIT, np.log(p.L)

    def residuals(theta):   # [n]
        pred = _law_internal(theta, S, N, D)
        return np.log(np.maximum(pred, 1e-12)) - logL

    return least_squares(residuals, np.clip(x0, LOWER, UPPER), bounds=(LOWER, UPPER), loss="huber",
                         f_scale=HUBER_SCALE, max_nfev=5000, x_scale="jac")


def fit_theta(p: Points, seed: int = 0, starts: int = STARTS, x0: np.ndarray | None = None) -> np.ndarray:
    """Best of `starts` seeded random starts (uniform in [0, 1]^7, the notebook's), or one start x0."""
    inits = [x0] if x0 is not None else list(np.random.default_rng(seed).uniform(size=(starts, 7)))
    best = None
    for x in inits:
        res = _solve(p, x)
        if best is None or res.cost < best.cost:
            best = res
    return best.x


@dataclass
class Fit:
    coef: dict
    ci: dict                      # name -> (low, high), percentile bootstrap
    points: Points
    predicted: np.ndarray         # [n]
    r2: float
    rmse: float
    bootstrap: int
    seed: int

    def as_dict(self) -> dict:
        p = self.points
        return {
            "law": "L = (a_S (1-S)^b_S + c_S) (1/N)^b_N + (a_D/D)^b_D + c",
            "units": {"N": "non-zero non-embedding parameters / 1e6", "D": "training tokens / 1e6",
                      "L": "held-out mean token loss (nats)"},
            "objective": f"scipy least_squares, Huber (scale {HUBER_SCALE}) on log L, {STARTS} seeded starts",
            "coefficients": {k: {"value": self.coef[k], "ci95": list(self.ci[k])} for k in NAMES},
            "reference": reference_coefficients(),
            "quality": {"r2": self.r2, "rmse": self.rmse, "n_points": len(p), "bootstrap": self.bootstrap,
                        "seed": self.seed},
            "points": [{"run_id": p.run_ids[i], "S": float(p.S[i]), "N": float(p.N[i]), "D": float(p.D[i]),
                        "L": float(p.L[i]), "L_fit": float(self.predicted[i]),
                        "residual": float(p.L[i] - self.predicted[i])} for i in range(len(p))],
            "optimal_sparsity": optimal_sparsity_table(self.coef, p),
        }


def reference_coefficients() -> dict:
    out = {}
    for name, c in REFERENCE.items():
        out[name] = {k: c[k] for k in ("a_S", "b_S", "c_S", "b_N", "b_D", "c")} | {"a_D": c["e"] ** (1 / c["b_D"])}
    return out


def fit(p: Points, bootstrap: int = 200, seed: int = 0) -> Fit:
    theta = fit_theta(p, seed)
    pred = _law_internal(theta, p.S, p.N / N_UNIT, p.D / D_UNIT)
    ss_res = float(np.sum((p.L - pred) ** 2))
    ss_tot = float(np.sum((p.L - p.L.mean()) ** 2))
    rng = np.random.default_rng(seed + 1)
    samples = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(p), len(p))
        if len(np.unique(idx)) <= len(NAMES):   # an under-determined resample says nothing
            continue
        samples.append(list(_to_coef(fit_theta(p.take(idx), x0=theta)).values()))
    if samples:
        lo, hi = np.percentile(np.array(samples), [2.5, 97.5], axis=0)
        ci = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(NAMES)}
    else:
        ci = {k: (math.nan, math.nan) for k in NAMES}
    return Fit(_to_coef(theta), ci, p, pred, 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
               math.sqrt(ss_res / len(p)), len(samples), seed)


# ---------------------------------------------------------------------------------------------
# optimal sparsity for a compute budget

S_GRID = np.linspace(0.0, 0.99, 199)


def optimal_sparsity(coef: dict, n_nonzero: float, compute: float) -> float:
    """argmin_S L(S, N, D) with D = C (1 - S) / (6 N): training charged as the dense shape N / (1 - S)."""
    d = compute * (1.0 - S_GRID) / (6.0 * n_nonzero)
    return float(S_GRID[int(np.argmin(law(coef, S_GRID, n_nonzero, d)))])


def optimal_sparsity_table(coef: dict, p: Points) -> list[dict]:
    """S_opt for each swept N (non-zeros at S=0, i.e. the dense sizes) over budgets spanning the sweep."""
    sizes = sorted({float(n) for n in p.N[p.S == 0]}) or sorted({float(np.median(p.N))})
    compute = np.geomspace(6 * p.N.min() * p.D.min() / 10, 6 * p.N.max() * p.D.max() * 100, 9)
    return [{"N": n, "C": float(c), "S_opt": optimal_sparsity(coef, n, float(c))} for n in sizes for c in compute]


# ---------------------------------------------------------------------------------------------
# output

def report(f: Fit) -> str:
    ref = reference_coefficients()
    cols = list(ref)
    lines = ["sparse scaling law  L = (a_S (1-S)^b_S + c_S) (1/N)^b_N + (a_D/D)^b_D + c",
             f"  N: non-zero non-embedding params / 1e6, D: training tokens / 1e6; "
             f"{len(f.points)} records; Huber({HUBER_SCALE}) on log L; bootstrap {f.bootstrap} (seed {f.seed})",
             "",
             f"{'coef':<6}{'fit':>11}{'95% CI':>24}   " + "   ".join(f"ref {i + 1}" for i in range(len(cols)))]
    for k in NAMES:
        lo, hi = f.ci[k]
        refs = "   ".join(f"{ref[c][k]:>8.4g}" for c in cols)
        lines.append(f"{k:<6}{f.coef[k]:>11.4g}   [{lo:>9.4g}, {hi:>9.4g}]   {refs}")
    for i, c in enumerate(cols):
        lines.append(f"  ref {i + 1}: {c}, the paper's fitting notebook (sparsity-scaling.ipynb)")
    lines.append("  only b_S, b_N, b_D are unit-free; a_S, c_S, a_D depend on the units of N and D")
    lines += ["", f"fit quality: R^2 = {f.r2:.4f}, RMSE = {f.rmse:.4f} nats", "",
              f"{'run_id':<18}{'S':>7}{'N':>10}{'D':>11}{'L':>9}{'L_fit':>9}{'resid':>9}"]
    p = f.points
    for i in np.lexsort((p.D, p.N, p.S)):
        lines.append(f"{p.run_ids[i]:<18}{p.S[i]:>7.4f}{p.N[i]:>10.0f}{p.D[i]:>11.0f}{p.L[i]:>9.4f}"
                     f"{f.predicted[i]:>9.4f}{p.L[i] - f.predicted[i]:>+9.4f}")
    lines += ["", "optimal sparsity for a training budget C = 6 N/(1-S) D (N non-zeros held fixed):"]
    for row in optimal_sparsity_table(f.coef, p):
        lines.append(f"  N = {row['N']:>9.0f}  C = {row['C']:>10.3g} FLOPs  S_opt = {row['S_opt']:.3f}")
    return "\n".join(lines)


def figure(f: Fit, title: str = "sparse scaling law L(S, N, D), Frantar et al. 2024: fitted curves over the records"):
    """Fitted curves over the points (L vs N per S, one panel per D), measured vs fitted, and S_opt vs C."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = f.points
    d_levels = sorted(set(p.D.tolist()))
    s_levels = sorted(set(np.round(p.S, 3).tolist()))
    n_panels = len(d_levels) + 2
    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    axes = axes.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_line = np.geomspace(p.N.min() / 1.5, p.N.max() * 1.5, 60)
    for ax, d in zip(axes, d_levels):
        for j, s in enumerate(s_levels):
            sel = (p.D == d) & (np.abs(p.S - s) < 5e-4)
            color = colors[j % len(colors)]
            ax.plot(n_line, law(f.coef, s, n_line, d), color=color, lw=1.4)
            ax.scatter(p.N[sel], p.L[sel], color=color, s=22, zorder=3, label=f"S={s:g}")
        ax.set_xscale("log")
        ax.set_xlabel("N (non-zero non-embedding params)")
        ax.set_ylabel("held-out loss L")
        ax.set_title(f"D = {d:,.0f} tokens", fontsize=10)
        ax.legend(fontsize=7)
    ax = axes[len(d_levels)]
    ax.scatter(f.predicted, p.L, s=18)
    lo, hi = min(p.L.min(), f.predicted.min()), max(p.L.max(), f.predicted.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("fitted L")
    ax.set_ylabel("measured L")
    ax.set_title(f"fit: R^2 = {f.r2:.3f}, RMSE = {f.rmse:.3f}", fontsize=10)
    ax = axes[len(d_levels) + 1]
    sizes = sorted({float(n) for n in p.N[p.S == 0]}) or [float(np.median(p.N))]
    compute = np.geomspace(6 * p.N.min() * p.D.min() / 10, 6 * p.N.max() * p.D.max() * 1e3, 40)
    for j, n in enumerate(sizes):
        ax.plot(compute, [optimal_sparsity(f.coef, n, c) for c in compute], color=colors[j % len(colors)],
                label=f"N = {n:,.0f}")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.0)
    ax.set_xlabel("training FLOPs C = 6 N/(1-S) D")
    ax.set_ylabel("optimal sparsity")
    ax.set_title("optimal sparsity per compute budget", fontsize=10)
    ax.legend(fontsize=7)
    for ax in axes[n_panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot(f: Fit, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = figure(f)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.scaling", description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, help="a results set (its records/*.json) or a folder of records")
    ap.add_argument("--plot", help="write the figure here (png)")
    ap.add_argument("--json", help="write the fit here (JSON; the leaderboard reads it)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the CIs (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        f = fit(load_points(Path(args.results)), args.bootstrap, args.seed)
    except ScalingError as exc:
        print(f"prunebench scaling: {exc}", file=sys.stderr)
        return 2
    print(report(f))
    if args.plot:
        print(f"plot: {plot(f, Path(args.plot))}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(f.as_dict(), indent=1) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
