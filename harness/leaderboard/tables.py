"""Leaderboard tables in the Awesome-LLMs-Pruning layout, written as Markdown, CSV and LaTeX.

overview      one row per cell (mean ± std over seeds), grouped by Type (Unstructured,
              Semi-structured, Structured, Other, Baseline), with the Criteria, Budget, Data, Retrain
              and Weights tags as columns; each metric column names its protocol.
by pattern    per model × pattern × metric: methods as rows, sparsity levels as columns, the dense
              value beside them.
status        runs per model × method × level and status, and every failed run with its error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.leaderboard.frame import Frames

TYPE_ORDER = ("Unstructured", "Semi-structured", "Structured", "Other", "Baseline")
TAG_COLUMNS = {"group_type": "Type", "method": "Method", "criteria": "Criteria", "budget": "Budget",
               "data": "Data", "retrain": "Retrain", "weights": "Weights"}


@dataclass
class Table:
    name: str            # file stem
    title: str
    frame: pd.DataFrame  # display values (strings), ready to write


def fmt_value(mean, std=float("nan"), digits: int = 4) -> str:
    """'12.34 ± 0.56'; '' for missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    # two decimals as the papers print perplexity and accuracy in %; small values keep `digits` figures
    text = f"{mean:.2f}" if abs(mean) >= 1 else f"{mean:.{digits}g}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.2g}"
    return text


def _type_key(series: pd.Series) -> pd.Series:
    order = {t: i for i, t in enumerate(TYPE_ORDER)}
    return series.map(lambda t: order.get(t, len(order)))


def overview(frames: Frames, cells: pd.DataFrame) -> Table:
    metric_cols = frames.metric_columns(headline=True)
    if cells.empty:
        cols = [*TAG_COLUMNS.values(), "Model", "Target", "Sparsity", *metric_cols, "Runs"]
        return Table("overview", "All cells", pd.DataFrame(columns=cols))
    c = cells.copy()
    c["_t"] = _type_key(c["group_type"])
    c = c.sort_values(["_t", "model", "method", "pattern", "ratio", "level"], na_position="last")
    out = pd.DataFrame({v: c[k].fillna("") for k, v in TAG_COLUMNS.items()})
    out["Version"] = c["method_version"].fillna("").astype(str)
    out["Model"] = c["model"]
    out["Target"] = c["level"]
    out["Allocator"] = c["allocator"].fillna("")
    out["Recovery"] = c["recovery"].fillna("")
    out["Sparsity"] = c["sparsity_blocks"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    for col in metric_cols:
        if col not in c:
            continue
        out[col] = [fmt_value(m, s) for m, s in zip(c[col], c.get(f"{col} std", pd.Series(float("nan"), index=c.index)))]
        if f"{col} % dense" in c:
            out[f"{col} % dense"] = [fmt_value(m) for m in c[f"{col} % dense"]]
    out["Runs"] = [f"{ok} ok" + (f", {f} failed" if f else "") + (f", {s} skipped" if s else "")
                   for ok, f, s in zip(c["n_ok"], c["n_failed"], c["n_skipped"])]
    out["Seeds"] = c["seeds"]
    out["cell"] = c["cell_id"]
    out["run_ids"] = c["run_ids"]
    out = out.reset_index(drop=True)
    # a column with no value at all (a metric no cell has) is dropped from the display
    keep = [col for col in out.columns if col in TAG_COLUMNS.values() or out[col].astype(str).str.len().gt(0).any()]
    return Table("overview", "All cells (mean ± std over seeds)", out[keep])


def by_pattern(frames: Frames, cells: pd.DataFrame) -> list[Table]:
    """Per model × pattern × quality metric: rows = methods (with tags), columns = sparsity levels."""
    tables: list[Table] = []
    if cells.empty:
        return tables
    quality = [c for c in frames.metric_columns(headline=True) if frames.specs[c].quality]
    dense_cells = cells[cells["group_type"] == "Baseline"]
    for (model, pattern), g in cells[cells["group_type"] != "Baseline"].groupby(["model", "pattern"], sort=True):
        levels = (g[["ratio", "n", "m", "level"]].drop_duplicates("level")
                  .sort_values(["ratio", "level"]))["level"].tolist()
        for col in quality:
            if col not in g or g[col].isna().all():
                continue
            dense_val = dense_cells.loc[dense_cells["model"] == model, col].mean() if col in dense_cells else float("nan")
            rows = []
            for keys, mg in g.groupby(["group_type", "method", "method_version", "allocator", "recovery"],
                                      sort=False, dropna=False):
                first = mg.iloc[0]
                row = {"Type": first["group_type"], "Method": first["method"],
                       **{TAG_COLUMNS[a]: first[a] for a in ("criteria", "budget", "data", "retrain", "weights")},
                       "Allocator": first["allocator"], "Recovery": first["recovery"],
                       "dense": fmt_value(dense_val)}
                for level in levels:
                    lv = mg[mg["level"] == level]
                    if lv.empty:
                        row[level] = ""
                    elif lv["n_ok"].sum() == 0:
                        row[level] = "failed" if lv["n_failed"].sum() else "skipped"
                    else:
                        row[level] = fmt_value(lv[col].iloc[0], lv.get(f"{col} std", pd.Series([float("nan")])).iloc[0])
                rows.append(row)
            frame = pd.DataFrame(rows)
            frame["_t"] = _type_key(frame["Type"])
            frame = frame.sort_values(["_t", "Method"]).drop(columns="_t").reset_index(drop=True)
            stem = slug(f"{model}_{pattern}_{col}")
            tables.append(Table(stem, f"{model} · {pattern} · {col}", frame))
    return tables


def status(frames: Frames) -> list[Table]:
    from harness.leaderboard.frame import status_counts

    counts = status_counts(frames)
    df = frames.runs
    failed = df[df["status"] != "ok"] if not df.empty else df
    fail_cols = ["run_id", "model", "method", "level", "seed", "status", "error_stage", "error"]
    failed = failed[[c for c in fail_cols if c in failed.columns]].copy() if not failed.empty else \
        pd.DataFrame(columns=fail_cols)
    failed["error"] = failed["error"].fillna("").astype(str).str.slice(0, 200)
    return [Table("status", "Runs per cell and status", counts),
            Table("failed", "Failed and skipped runs", failed.reset_index(drop=True))]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120]


def to_markdown(table: Table) -> str:
    if table.frame.empty:
        return f"### {table.title}\n\n(no rows)\n"
    return f"### {table.title}\n\n{table.frame.to_markdown(index=False)}\n"


def to_latex(table: Table) -> str:
    if table.frame.empty:
        return f"% {table.title}: no rows\n"
    body = table.frame.astype(str).to_latex(index=False, escape=True, longtable=False)
    return f"% {table.title}\n{body}"


def write(table: Table, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{table.name}.md", "csv": out_dir / f"{table.name}.csv",
             "tex": out_dir / f"{table.name}.tex"}
    paths["md"].write_text(to_markdown(table), encoding="utf-8")
    table.frame.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(to_latex(table), encoding="utf-8")
    return paths


def leaderboard_markdown(frames: Frames, cells: pd.DataFrame, problems: list, plot_notes: list[str]) -> str:
    """The whole leaderboard as one Markdown page, sections by Type."""
    lines = ["# prunebench leaderboard", ""]
    n = len(frames.runs)
    st = frames.runs["status"].value_counts().to_dict() if n else {}
    lines.append(f"{n} records: {st.get('ok', 0)} ok, {st.get('failed', 0)} failed, {st.get('skipped', 0)} skipped; "
                 f"{len(problems)} unreadable record files skipped.")
    lines.append("")
    lines.append("Metric columns name their protocol. `% dense` is quality retained vs the dense model of the "
                 "same model, dtype and protocol: dense/x for perplexity, x/dense for accuracy.")
    lines.append("")
    ov = overview(frames, cells)
    drop = ["cell", "run_ids"]
    for t in TYPE_ORDER + tuple(sorted(set(ov.frame.get("Type", pd.Series(dtype=str))) - set(TYPE_ORDER))):
        part = ov.frame[ov.frame["Type"] == t] if not ov.frame.empty else ov.frame
        if part.empty:
            continue
        lines += [f"## {t}", "", part.drop(columns=[c for c in drop if c in part]).to_markdown(index=False), ""]
    tables = by_pattern(frames, cells)
    if tables:
        lines += ["## By model and pattern", ""]
        for table in tables:
            lines += [to_markdown(table), ""]
    for table in status(frames):
        lines += [f"## {table.title}", "", table.frame.to_markdown(index=False) if not table.frame.empty else "(none)", ""]
    if problems:
        lines += ["## Skipped record files", ""] + [f"- `{p}`: {why}" for p, why in problems] + [""]
    if plot_notes:
        lines += ["## Plots not drawn", ""] + [f"- {note}" for note in plot_notes] + [""]
    return "\n".join(lines)
