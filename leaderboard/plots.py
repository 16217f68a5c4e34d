"""Leaderboard figures (matplotlib, PNG + SVG, byte-stable). A figure without data is not drawn; a note says why.

ppl_vs_sparsity     per model × ppl protocol × device/dtype: a line per method variant vs measured
                    sparsity of block linears (unstructured), N:M as separate markers
ppl_vs_removed      structured methods: perplexity vs fraction of parameters removed
depth_metrics       depth pruning: perplexity per block-importance metric at the blocks removed
recovery            before -> after arrows for cells that differ only by their recovery
quality_vs_latency  Pareto: perplexity of the same pruned model vs decode ms/token, front drawn
quality_vs_kv       Pareto: bounded-cache perplexity vs measured KV MiB, points labelled by policy
zeroshot_bars       per zero-shot protocol: grouped bars per task
Every title names model, protocol and dtype/device. No point ever averages two cells.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leaderboard.frame import Frames
from leaderboard.tables import slug

STABLE_RC = {"svg.hashsalt": "prunebench", "svg.fonttype": "path", "path.simplify": True}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on CI
    import matplotlib.pyplot as plt

    plt.rcParams.update(STABLE_RC)
    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    """PNG and SVG without dates or random ids, so a rebuild from the same records is byte-identical."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    _pyplot().close(fig)
    return paths


def _proto(col: str) -> str:
    from leaderboard.tables import protocol_of

    return protocol_of(col)


def _title(model, col, device, dtype, what=""):
    return f"{model} · {device} {dtype}\n{what or col}"


def _label(row) -> str:
    words = [str(row["label"])]
    for k in ("variant",):
        if row.get(k):
            words.append(str(row[k]))
    if row.get("allocator") not in (None, "", "uniform"):
        words.append(f"alloc={row['allocator']}")
    if row.get("recovery") not in (None, "", "none"):
        words.append(f"+{row['recovery']}")
    if row.get("result_set"):
        words.append(f"[{row['result_set']}]")
    return " ".join(words)


def ppl_vs_sparsity(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    plt = _pyplot()
    made = []
    for col in frames.metric_columns("ppl"):
        c = cells[cells[col].notna() & (cells["n_ok"] > 0) & (cells["kv_policy"].fillna("") == "")]
        for (model, device, dtype), g in c.groupby(["model", "device", "dtype"]):
            w = g[g["pattern"].isin(["unstructured", "nm"])]
            if w.empty:
                continue
            fig, ax = plt.subplots(figsize=(7.5, 4.6))
            dense = g[g["group_type"] == "Baseline"]
            for _, d in dense.iterrows():
                ax.axhline(d[col], color="k", ls="--", lw=1, label=f"dense {d['result_set'] or ''}".strip())
            for key, mg in w.groupby(["label", "variant", "allocator", "recovery", "result_set"], dropna=False):
                row = mg.iloc[0]
                un = mg[mg["pattern"] == "unstructured"].sort_values("sparsity_blocks")
                nm = mg[mg["pattern"] == "nm"]
                if len(un):
                    line = ax.errorbar(un["sparsity_blocks"], un[col], yerr=un.get(f"{col} std"), marker="o",
                                       capsize=3, label=_label(row))
                    color = line[0].get_color()
                else:
                    color = None
                for _, p in nm.iterrows():
                    ax.plot([p["sparsity_blocks"]], [p[col]], marker="s", ls="none", color=color,
                            label=f"{_label(row)} {p['level']}")
            ax.set_yscale("log")
            ax.set_xlabel("sparsity of block linears (measured); squares: N:M")
            ax.set_ylabel("perplexity (log)")
            ax.set_title(_title(model, col, device, dtype), fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, loc="upper left", ncol=2)
            made += _save(fig, out_dir, slug(f"ppl_vs_sparsity_{model}_{device}_{dtype}_{col}"))
    if not made:
        notes.append("perplexity vs sparsity: no weight-pruning cell has a perplexity")
    return made


def ppl_vs_removed(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    plt = _pyplot()
    made = []
    for col in frames.metric_columns("ppl"):
        c = cells[cells[col].notna() & cells["params_removed"].notna() & (cells["n_ok"] > 0)
                  & cells["pattern"].isin(["blocks", "sublayers", "width", "shape"])]
        for (model, device, dtype), g in c.groupby(["model", "device", "dtype"]):
            fig, ax = plt.subplots(figsize=(7.5, 4.6))
            for key, mg in g.groupby(["label", "variant", "recovery", "result_set"], dropna=False):
                mg = mg.sort_values("params_removed")
                ax.plot(100 * mg["params_removed"], mg[col], marker="o", label=_label(mg.iloc[0]))
            ax.set_yscale("log")
            ax.set_xlabel("parameters removed, % of the dense model (measured)")
            ax.set_ylabel("perplexity (log)")
            ax.set_title(_title(model, col, device, dtype, f"structured pruning · {col}"), fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, ncol=2)
            made += _save(fig, out_dir, slug(f"ppl_vs_removed_{model}_{device}_{dtype}_{col}"))
    if not made:
        notes.append("perplexity vs parameters removed: no structured cell has a perplexity")
    return made


def depth_metrics(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    plt = _pyplot()
    made = []
    for col in frames.metric_columns("ppl"):
        c = cells[cells[col].notna() & (cells["pattern"] == "blocks") & (cells["recovery"] == "none")]
        for (model, device, dtype, level), g in c.groupby(["model", "device", "dtype", "level"]):
            if len(g) < 2:
                continue
            g = g.sort_values(col)
            fig, ax = plt.subplots(figsize=(7.5, 4.6))
            names = [_label(r) for _, r in g.iterrows()]
            ax.barh(range(len(g)), g[col], color="tab:blue")
            ax.set_yticks(range(len(g)), names, fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel("perplexity (log)")
            ax.set_title(_title(model, col, device, dtype, f"depth pruning, {level} removed · {col}"), fontsize=8)
            ax.grid(True, axis="x", which="both", alpha=0.3)
            made += _save(fig, out_dir, slug(f"depth_metrics_{model}_{device}_{dtype}_{level}_{col}"))
    if not made:
        notes.append("depth metrics: fewer than two depth cells at one level")
    return made


def recovery_arrows(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    """Before (no recovery) -> after, for cells whose configs differ only by the recovery."""
    import json

    plt = _pyplot()
    made = []
    runs = frames.runs
    key_of = {}
    for _, r in runs.iterrows():
        cfg = json.loads(r["config_flat"])
        key_of[r["cell_id"]] = json.dumps({k: v for k, v in cfg.items() if not k.startswith("recovery.")}, sort_keys=True)
    for col in frames.metric_columns("ppl"):
        c = cells[cells[col].notna() & (cells["n_ok"] > 0)].copy()
        c["_base"] = c["cell_id"].map(key_of)
        pairs = []
        for _, g in c.groupby("_base"):
            before = g[g["recovery"] == "none"]
            after = g[g["recovery"] != "none"]
            if len(before) == 1 and len(after):
                pairs += [(before.iloc[0], a) for _, a in after.iterrows()]
        if not pairs:
            continue
        for (model, device, dtype), _ in c.groupby(["model", "device", "dtype"]):
            mine = [(b, a) for b, a in pairs if (b["model"], b["device"], b["dtype"]) == (model, device, dtype)]
            if not mine:
                continue
            fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(mine) + 1.8))
            for i, (b, a) in enumerate(mine):
                ax.annotate("", xy=(a[col], i), xytext=(b[col], i),
                            arrowprops=dict(arrowstyle="->", color="tab:green" if a[col] < b[col] else "tab:red"))
                ax.plot([b[col]], [i], "o", color="grey")
            ax.set_yticks(range(len(mine)), [f"{b['label']} {b['level']} +{a['recovery']} {a['variant']}".strip()
                                             for b, a in mine], fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel("perplexity (log): grey = no recovery, arrow head = after recovery")
            ax.set_title(_title(model, col, device, dtype, f"recovery gains · {col}"), fontsize=8)
            ax.grid(True, axis="x", which="both", alpha=0.3)
            made += _save(fig, out_dir, slug(f"recovery_{model}_{device}_{dtype}_{col}"))
    if not made:
        notes.append("recovery gains: no cell has both a no-recovery and a recovered twin")
    return made


def _pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated (lower x and lower y are both better)."""
    front, best = [], float("inf")
    for _, p in points.sort_values([x, y]).iterrows():
        if p[y] < best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front)


def _scatter_front(ax, pts: pd.DataFrame, x: str, y: str, label_col: str) -> None:
    for _, p in pts.iterrows():
        ax.scatter([p[x]], [p[y]])
        ax.annotate(p[label_col], (p[x], p[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = _pareto(pts, x, y)
    if len(front) > 1:
        ax.plot(front[x], front[y], "k-", lw=1, alpha=0.6, label="Pareto front")
        ax.legend(fontsize=7)


def quality_vs_latency(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    plt = _pyplot()
    made = []
    runs = frames.runs[frames.runs["status"] == "ok"]
    lat_cols = [c for c in frames.metric_columns("latency") if "decode" in c] or frames.metric_columns("latency")
    for xcol in lat_cols:
        for ycol in frames.metric_columns("ppl"):
            ppl = runs[runs[ycol].notna()].groupby("pruned_id")[ycol].mean()
            lat = runs[runs[xcol].notna()].copy()
            lat["_y"] = lat["pruned_id"].map(ppl)
            lat = lat[lat["_y"].notna()]
            if len(lat) < 2:
                continue
            lat["_name"] = [f"{r['label']} {r['level']}" for _, r in lat.iterrows()]
            model = lat["model"].iloc[0]
            fig, ax = plt.subplots(figsize=(7.5, 4.6))
            _scatter_front(ax, lat.rename(columns={xcol: "_x"}), "_x", "_y", "_name")
            ax.set_yscale("log")
            ax.set_xlabel(xcol, fontsize=7)
            ax.set_ylabel("perplexity of the same pruned model (log)", fontsize=8)
            ax.set_title(f"{model} · quality vs measured latency\n{ycol}", fontsize=8)
            ax.grid(True, alpha=0.3)
            made += _save(fig, out_dir, slug(f"quality_vs_latency_{model}_{xcol}_{ycol}"))
    if not made:
        notes.append("quality vs latency: fewer than two pruned models have both a latency and a perplexity")
    return made


def quality_vs_kv(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    plt = _pyplot()
    made = []
    for xcol in frames.metric_columns("kv"):
        for ycol in frames.metric_columns("kv_ppl"):
            c = cells[cells[xcol].notna() & cells[ycol].notna()].copy()
            for (model, device, dtype), g in c.groupby(["model", "device", "dtype"]):
                if len(g) < 2:
                    continue
                g["_name"] = [f"{r['method'] if r['kv_policy'] else r['label']} {r['level']}"
                              f"{' · ' + r['kv_policy'] if r['kv_policy'] else ' · full cache'}" for _, r in g.iterrows()]
                fig, ax = plt.subplots(figsize=(7.5, 4.6))
                _scatter_front(ax, g, xcol, ycol, "_name")
                ax.set_xlabel(xcol, fontsize=7)
                ax.set_ylabel("bounded-cache perplexity", fontsize=8)
                ax.set_title(_title(model, ycol, device, dtype, f"quality vs KV memory, by policy\n{ycol}"), fontsize=8)
                ax.grid(True, alpha=0.3)
                made += _save(fig, out_dir, slug(f"quality_vs_kv_{model}_{device}_{dtype}"))
    if not made:
        notes.append("quality vs KV memory: fewer than two cells have both a KV measurement and a bounded-cache perplexity")
    return made


def zeroshot_bars(frames: Frames, cells: pd.DataFrame, out_dir: Path, notes: list[str]) -> list[Path]:
    plt = _pyplot()
    made = []
    specs = [s for s in frames.specs.values() if s.group == "zeroshot" and s.headline and s.path[0] != "derived"]
    for proto in sorted({_proto(s.column) for s in specs}):
        cols = [s for s in specs if _proto(s.column) == proto]
        c = cells[cells[[s.column for s in cols]].notna().any(axis=1)]
        if c.empty:
            continue
        fig, ax = plt.subplots(figsize=(9, 4.6))
        width = 0.8 / len(c)
        for i, (_, r) in enumerate(c.iterrows()):
            xs = [j + i * width for j in range(len(cols))]
            err = [100 * (r.get(f"{s.column} stderr") if not pd.isna(r.get(f"{s.column} stderr")) else 0) for s in cols]
            ax.bar(xs, [100 * r[s.column] for s in cols], width, yerr=err, capsize=2,
                   label=f"{r['label']} {r['level']} {r['variant']}".strip())
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], [s.task.replace(" acc", "") for s in cols],
                      rotation=30, fontsize=7)
        ax.set_ylabel("accuracy, % (± lm-eval stderr)")
        ax.set_title(f"{c['model'].iloc[0]} · {c['device'].iloc[0]} {c['dtype'].iloc[0]}\nzero-shot ({proto})", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
        made += _save(fig, out_dir, slug(f"zeroshot_bars_{proto}"))
    if not made:
        notes.append("zero-shot bars: no record has zero-shot accuracy")
    return made


def make_plots(frames: Frames, out_dir: Path, cells: pd.DataFrame | None = None) -> tuple[list[Path], list[str]]:
    """All figures; returns (files written, notes on figures not drawn)."""
    from leaderboard.frame import cells_frame

    cells = cells_frame(frames) if cells is None else cells
    notes: list[str] = []
    made: list[Path] = []
    if frames.runs.empty:
        return made, ["no records"]
    for fn in (ppl_vs_sparsity, ppl_vs_removed, depth_metrics, recovery_arrows, quality_vs_latency, quality_vs_kv,
               zeroshot_bars):
        made += fn(frames, cells, out_dir, notes)
    return made, notes


def scaling_law(records: list[dict], sets: list[str], out_dir: Path, notes: list[str]) -> list[Path]:
    """The sparse scaling law (harness.scaling) fitted to each result set shaped as a scaling sweep:
    every ok record carries S, N, D and the held-out loss, and S, N and D each take two values or more
    (e.g. suite=scaling). Point estimates only (no bootstrap: `python -m harness.scaling` gives CIs)."""
    from harness.scaling import ScalingError, figure, fit, is_sweep, points_from_records

    made: list[Path] = []
    for name in sorted(set(sets)):
        recs = [r for r, s in zip(records, sets) if s == name and r.get("status") == "ok"]
        try:
            pts = points_from_records(recs, [str(r.get("run_id")) for r in recs], name or "results")
        except ScalingError:
            continue   # not a scaling sweep (a record without a held-out loss, or too few records)
        if not is_sweep(pts):
            continue
        f = fit(pts, bootstrap=0)
        _pyplot()   # the stable rc (svg hash salt, fonts) before the figure exists
        fig = figure(f, f"{name}: sparse scaling law L(S, N, D) (Frantar et al. 2024) fitted to {len(pts)} records")
        made += _save(fig, out_dir, f"scaling_law_{name.replace('/', '_') or 'results'}")
    return made
