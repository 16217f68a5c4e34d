"""Leaderboard figures (matplotlib, PNG + SVG). A figure without data is not drawn; a note says why.

ppl_vs_sparsity       per model and perplexity protocol: one line per method (log y), dense as a line
zeroshot_vs_sparsity  per model: mean zero-shot accuracy vs sparsity
quality_vs_latency    per model: perplexity vs a latency metric, with the Pareto front
quality_vs_kv         per model: perplexity (or accuracy) vs KV-cache bytes
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.leaderboard.frame import Frames
from harness.leaderboard.tables import slug


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    _pyplot().close(fig)
    return paths


def _x_sparsity(df: pd.DataFrame) -> pd.Series:
    """Measured block sparsity; the target ratio where a run did not measure it."""
    return df["sparsity_blocks"].fillna(df["ratio"]).astype(float)


def _vs_sparsity(frames: Frames, cols: list[str], out_dir: Path, stem: str, ylabel: str,
                 log: bool, notes: list[str], what: str) -> list[Path]:
    plt = _pyplot()
    df = frames.runs
    made: list[Path] = []
    if df.empty or not cols:
        notes.append(f"{what}: no record has such a metric")
        return made
    ok = df[df["status"] == "ok"]
    for col in cols:
        for model, g in ok.groupby("model"):
            g = g[g[col].notna()]
            if g.empty:
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            dense = g[g["group_type"] == "Baseline"]
            if not dense.empty:
                ax.axhline(dense[col].mean(), color="k", ls="--", lw=1, label="dense")
            for (method, pattern), mg in g[g["group_type"] != "Baseline"].groupby(["method", "pattern"]):
                x = _x_sparsity(mg)
                stats = mg.assign(_x=x.round(3)).groupby("_x")[col].agg(["mean", "std"]).reset_index()
                marker = "s" if pattern == "nm" else "o"
                ls = "none" if pattern == "nm" else "-"
                ax.errorbar(stats["_x"], stats["mean"], yerr=stats["std"].fillna(0), marker=marker, ls=ls,
                            capsize=3, label=f"{method} ({pattern})")
            if log:
                ax.set_yscale("log")
            ax.set_xlim(0.0, max(0.8, float(_x_sparsity(g).max()) + 0.05))  # dense (0) to the sparsest run
            ax.set_xlabel("sparsity of block linears (measured)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model}\n{col}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            made += _save(fig, out_dir, slug(f"{stem}_{model}_{col}"))
    if not made:
        notes.append(f"{what}: no ok run has the metric")
    return made


def _pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated (lower x and lower y are both better)."""
    front, best = [], float("inf")
    for _, p in points.sort_values([x, y]).iterrows():
        if p[y] < best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front)


def _quality_vs(frames: Frames, xcols: list[str], out_dir: Path, stem: str, xlabel: str,
                notes: list[str], what: str) -> list[Path]:
    plt = _pyplot()
    df = frames.runs
    quality = [c for c in frames.metric_columns(headline=True) if frames.specs[c].group == "ppl"] or \
              [c for c in frames.metric_columns(headline=True) if frames.specs[c].quality]
    if df.empty or not xcols or not quality:
        notes.append(f"{what}: no record has {'both ' if xcols else ''}a {xlabel} metric"
                     f"{' and a quality metric' if xcols else ''}")
        return []
    made: list[Path] = []
    ok = df[df["status"] == "ok"]
    for xcol in xcols:
        # the quality metric measured on the most of the same runs (e.g. kv_ppl beside KV bytes)
        ycol = max(quality, key=lambda q: int((ok[xcol].notna() & ok[q].notna()).sum()))
        for model, g in ok.groupby("model"):
            g = g[g[xcol].notna() & g[ycol].notna()]
            if g.empty:
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for label, mg in g.groupby(["method", "level"]):
                ax.scatter(mg[xcol], mg[ycol], label=f"{label[0]} {label[1]}")
            lower = frames.specs[ycol].lower_is_better
            pts = g[[xcol, ycol]].copy()
            if not lower:  # Pareto on (x down, y up): flip y
                pts[ycol] = -pts[ycol]
            front = _pareto(pts, xcol, ycol)
            if len(front) > 1:
                ys = front[ycol] if lower else -front[ycol]
                ax.plot(front[xcol], ys, "k-", lw=1, alpha=0.6, label="Pareto front")
            if lower:
                ax.set_yscale("log")
            ax.set_xlabel(xcol, fontsize=8)
            ax.set_ylabel(ycol, fontsize=8)
            ax.set_title(model, fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
            made += _save(fig, out_dir, slug(f"{stem}_{model}_{xcol}"))
    if not made:
        notes.append(f"{what}: no ok run has both metrics")
    return made


def make_plots(frames: Frames, out_dir: Path) -> tuple[list[Path], list[str]]:
    """All figures; returns (files written, notes on figures not drawn)."""
    notes: list[str] = []
    made: list[Path] = []
    ppl = frames.metric_columns("ppl")
    made += _vs_sparsity(frames, ppl, out_dir, "ppl_vs_sparsity", "perplexity (log)", True, notes,
                         "perplexity vs sparsity")
    zs_mean = [c for c in frames.metric_columns("zeroshot") if frames.specs[c].path[0] == "derived"]
    made += _vs_sparsity(frames, zs_mean, out_dir, "zeroshot_vs_sparsity", "mean zero-shot accuracy", False,
                         notes, "mean zero-shot accuracy vs sparsity")
    made += _quality_vs(frames, frames.metric_columns("latency"), out_dir, "quality_vs_latency", "latency",
                        notes, "quality vs latency")
    made += _quality_vs(frames, frames.metric_columns("kv"), out_dir, "quality_vs_kv", "KV memory",
                        notes, "quality vs KV memory")
    return made, notes
