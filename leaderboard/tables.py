"""Leaderboard tables in the Awesome-LLMs-Pruning layout, written as Markdown, CSV and LaTeX.

overview      one row per cell (the full identity of what ran), with the list's tag columns, the
              Variant words that tell a method's rows apart, perplexity per protocol (mean ± std
              only over seeds of that one cell), parameters removed, seeds, result set, flags.
zeroshot      per protocol: tasks as columns (acc ± lm-eval's stderr), the mean over tasks.
latency       prefill ms and decode ms/token per setting, the kernel path, and the perplexity of the
              same pruned model (joined on the pruned model's identity).
kv            KV-cache policies: bounded-cache perplexity and measured KV memory, labelled by policy.
by pattern    per model × pattern × perplexity protocol: one row per method variant, levels as columns.
coverage      every registered method and KV-cache policy (with "no result yet"), and the list's papers not
              implemented.
published     paper vs reproduced (matching model and protocol) and the "as reported" numbers;
              published conclusions vs reproduced (published.conclusions_table, harness/conclusions.py).
status        runs per method × level and status, and every failed run with its error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leaderboard.frame import Frames

TYPE_ORDER = ("Unstructured", "Semi-structured", "Un/Semi-structured", "Structured", "Structured-Depth",
              "Structured-Channel+Depth", "Other", "Baseline")
TAG_COLUMNS = {"group_type": "Type", "label": "Method", "variant": "Variant", "criteria": "Criteria",
               "budget": "Budget", "data": "Data", "retrain": "Retrain", "weights": "Weights"}


@dataclass
class Table:
    name: str            # file stem
    title: str
    frame: pd.DataFrame  # display values (strings), ready to write
    note: str = ""


def fmt_value(mean, std=float("nan"), digits: int = 4) -> str:
    """'12.34 ± 0.56'; '' for missing. The ± part only where there is a spread (over seeds of one cell)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    text = f"{mean:.2f}" if abs(mean) >= 1 else f"{mean:.{digits}g}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.2g}"
    return text


def protocol_of(column: str) -> str:
    """The protocol words of a metric column name ("... (<protocol>)"; a mean's task count dropped)."""
    proto = column.rsplit(" (", 1)[1].rstrip(")") if " (" in column else ""
    return re.sub(r"^\d+ tasks, ", "", proto)


def _type_key(series: pd.Series) -> pd.Series:
    order = {t: i for i, t in enumerate(TYPE_ORDER)}
    return series.map(lambda t: order.get(t, len(order)))


def _sorted(c: pd.DataFrame) -> pd.DataFrame:
    c = c.copy()
    c["_t"] = _type_key(c["group_type"])
    return c.sort_values(["_t", "model", "label", "pattern", "ratio", "level", "variant", "recovery", "device",
                          "cell_id"], na_position="last").drop(columns="_t")


def _std(c: pd.DataFrame, col: str) -> pd.Series:
    return c.get(f"{col} std", pd.Series(float("nan"), index=c.index))


def _seeds(c: pd.DataFrame) -> list[str]:
    """'1 (seed 0)', '3 (seeds 0,1,2)': how many seeds ran ok, and which."""
    return [f"{n} (seed{'s' if n != 1 else ''} {s})" if n else "0" for n, s in zip(c["n_seeds"], c["seeds"])]


def _removed(c: pd.DataFrame) -> list[str]:
    """Sparsity of block linears for weight pruning; parameters removed for structured methods."""
    out = []
    for sb, pr, pattern in zip(c["sparsity_blocks"], c["params_removed"], c["pattern"]):
        if pattern in ("blocks", "sublayers", "width", "shape") and not pd.isna(pr):
            out.append(f"{100 * pr:.1f}% params")
        elif not pd.isna(sb) and sb > 0:
            out.append(f"{100 * sb:.1f}% weights")
        else:
            out.append("")
    return out


def _identity(c: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({v: c[k].fillna("").astype(str) for k, v in TAG_COLUMNS.items()}, index=c.index)
    out["Model"] = c["model"]
    out["Target"] = c["level"]
    out["Removed"] = _removed(c)
    out["Allocator"] = c["allocator"].fillna("").replace("uniform", "")
    out["Recovery"] = c["recovery"].fillna("").replace("none", "")
    out["Device"] = c["device"].fillna("") + " " + c["dtype"].fillna("")
    return out


def _tail(out: pd.DataFrame, c: pd.DataFrame) -> pd.DataFrame:
    out["Seeds"] = _seeds(c)
    out["Runs"] = [f"{ok} ok" + (f", {f} failed" if f else "") for ok, f in zip(c["n_ok"], c["n_failed"])]
    out["Set"] = c["result_set"].fillna("")
    out["Flags"] = c["flags"].fillna("")
    out["run_ids"] = c["run_ids"]
    return out


def _drop_empty(out: pd.DataFrame, keep=()) -> pd.DataFrame:
    cols = [col for col in out.columns if col in keep or out[col].astype(str).str.len().gt(0).any()]
    return out[cols].reset_index(drop=True)


def overview(frames: Frames, cells: pd.DataFrame) -> Table:
    """Every cell, its identity, and perplexity per protocol (the other evaluations: their tables)."""
    ppl_cols = frames.metric_columns("ppl")
    if cells.empty:
        return Table("overview", "All cells", pd.DataFrame(columns=[*TAG_COLUMNS.values(), "Model", "Target"]))
    c = _sorted(cells)
    out = _identity(c)
    for col in ppl_cols:
        out[col] = [fmt_value(m, s) for m, s in zip(c[col], _std(c, col))]
        if f"{col} % dense" in c:
            out[f"{col} % dense"] = [fmt_value(m) for m in c[f"{col} % dense"]]
    groups = {"zeroshot": "zero-shot", "latency": "latency", "kv": "KV", "kv_ppl": "KV"}
    evaluated = []
    for _, row in c.iterrows():
        kinds = []
        for col, spec in frames.specs.items():
            if spec.headline and col in row and not pd.isna(row[col]):
                kinds.append("ppl" if spec.group == "ppl" else groups.get(spec.group, spec.group))
        evaluated.append(", ".join(dict.fromkeys(kinds)))
    out["Evaluated"] = evaluated
    out = _tail(out, c)
    return Table("overview", "All cells (one row per configuration; ± only over seeds of that cell)",
                 _drop_empty(out, keep=TAG_COLUMNS.values()))


def zeroshot(frames: Frames, cells: pd.DataFrame) -> list[Table]:
    """One table per zero-shot protocol: tasks as columns (acc ± lm-eval stderr), mean over tasks."""
    specs = [s for s in frames.specs.values() if s.group == "zeroshot" and s.headline]
    protocols = sorted({protocol_of(s.column) for s in specs})
    tables = []
    for i, proto in enumerate(protocols):
        cols = [s for s in specs if protocol_of(s.column) == proto]
        c = cells[cells[[s.column for s in cols]].notna().any(axis=1)] if cols else cells.iloc[0:0]
        if c.empty:
            continue
        c = _sorted(c)
        out = _identity(c)
        for s in cols:
            if s.path[0] == "derived":
                continue
            stderr = c.get(f"{s.column} stderr", pd.Series(float("nan"), index=c.index))
            out[s.task] = [fmt_value(100 * m, 100 * e if not pd.isna(e) else e) if not pd.isna(m) else ""
                           for m, e in zip(c[s.column], stderr)]
        mean = next((s for s in cols if s.path[0] == "derived"), None)
        if mean is not None:
            out["mean acc"] = [fmt_value(100 * m) for m in c[mean.column]]
            if f"{mean.column} % dense" in c:
                out["mean % dense"] = [fmt_value(m) for m in c[f"{mean.column} % dense"]]
        out = _tail(out, c)
        tables.append(Table(f"zeroshot_{i}", f"Zero-shot accuracy, % ({proto})", _drop_empty(out),
                            "acc ± lm-eval's bootstrap stderr per task; mean = unweighted mean of acc over the tasks."))
    return tables


def latency(frames: Frames, cells: pd.DataFrame) -> list[Table]:
    """Latency headline numbers with the kernel path and the perplexity of the same pruned model."""
    lat = frames.metric_columns("latency")
    if not lat:
        return []
    c = cells[cells[lat].notna().any(axis=1)]
    if c.empty:
        return []
    c = _sorted(c)
    out = _identity(c)
    out["kernel path"] = c.get("kernel path", pd.Series("", index=c.index)).fillna("")
    for col in lat:
        out[frames.specs[col].task] = [fmt_value(m, s) for m, s in zip(c[col], _std(c, col))]
    proto = sorted({col.rsplit(" (", 1)[1].rstrip(")") for col in lat})
    ppl = _same_model_ppl(frames, c)
    for col, values in ppl.items():
        out[col] = values
    out = _tail(out, c)
    return [Table("latency", f"Latency: median of timed repeats ({'; '.join(proto)})", _drop_empty(out),
                  "prefill = one forward of batch × prompt tokens; decode = ms per generated token. "
                  "Perplexity columns: the run of the same pruned model (same config and seed) under that protocol.")]


def _same_model_ppl(frames: Frames, c: pd.DataFrame) -> dict[str, list[str]]:
    """For each cell of `c`: the perplexity measured on the same pruned model in another run."""
    runs = frames.runs[frames.runs["status"] == "ok"]
    out: dict[str, list[str]] = {}
    for col in frames.metric_columns("ppl"):
        have = runs[runs[col].notna()].groupby("pruned_id")[col].mean()
        vals = []
        for ids in c["run_ids"]:
            pids = runs[runs["run_id"].isin(ids.split(","))]["pruned_id"]
            v = [have[p] for p in pids if p in have.index]
            vals.append(fmt_value(sum(v) / len(v)) if v else "")
        if any(vals):
            out[col] = vals
    return out


def kv(frames: Frames, cells: pd.DataFrame) -> list[Table]:
    cols = frames.metric_columns("kv_ppl") + frames.metric_columns("kv")
    if not cols:
        return []
    c = cells[cells[cols].notna().any(axis=1)]
    if c.empty:
        return []
    c = _sorted(c)
    out = _identity(c)
    out.insert(2, "KV policy", c["kv_policy"].replace("", "none (full cache)").fillna("none (full cache)"))
    for col in cols:
        out[col] = [fmt_value(m, s) for m, s in zip(c[col], _std(c, col))]
        if f"{col} % dense" in c:
            out[f"{col} % dense"] = [fmt_value(m) for m in c[f"{col} % dense"]]
    out = _tail(out, c)
    return [Table("kv", "KV cache: bounded-cache perplexity and measured KV memory, by policy", _drop_empty(out))]


def by_pattern(frames: Frames, cells: pd.DataFrame) -> list[Table]:
    """Per model × pattern × perplexity protocol: one row per method variant (never a merge of two
    cells: a row is keyed by everything that identifies a cell but its level), levels as columns."""
    tables: list[Table] = []
    if cells.empty:
        return tables
    row_keys = ["group_type", "label", "variant", "allocator", "recovery", "device", "dtype", "result_set"]
    dense_cells = cells[cells["group_type"] == "Baseline"]
    pruned = cells[(cells["group_type"] != "Baseline") & (cells["kv_policy"].fillna("") == "")]
    for (model, pattern), g in pruned.groupby(["model", "pattern"], sort=True):
        levels = (g[["ratio", "count", "level"]].drop_duplicates("level")
                  .sort_values(["ratio", "count", "level"]))["level"].tolist()
        for col in frames.metric_columns("ppl"):
            if col not in g or g[col].isna().all():
                continue
            gg = g[g[col].notna() | (g["n_ok"] == 0)]
            dense_all = dense_cells[(dense_cells["model"] == model) & dense_cells[col].notna()] \
                if col in dense_cells else dense_cells.iloc[0:0]
            rows = []
            for keys, mg in gg.groupby(row_keys, sort=False, dropna=False):
                first = mg.iloc[0]
                row = {"Type": first["group_type"], "Method": first["label"], "Variant": first["variant"],
                       **{TAG_COLUMNS[a]: first[a] for a in ("criteria", "budget", "data", "retrain", "weights")},
                       "Allocator": first["allocator"] if first["allocator"] != "uniform" else "",
                       "Recovery": first["recovery"] if first["recovery"] != "none" else "",
                       "Device": f"{first['device']} {first['dtype']}", "Set": first["result_set"],
                       "dense": _dense_for(dense_all, col, first)}
                for level in levels:
                    lv = mg[mg["level"] == level]
                    if lv.empty:
                        row[level] = ""
                    elif len(lv) > 1:   # two cells on one row would be a merge: refuse, name them
                        row[level] = "cells " + ", ".join(lv["cell_id"].str[:6])
                    elif lv["n_ok"].iloc[0] == 0:
                        row[level] = "failed"   # a cell exists only with a record: ok or failed
                    else:
                        row[level] = fmt_value(lv[col].iloc[0], _std(lv, col).iloc[0])
                rows.append(row)
            frame = pd.DataFrame(rows)
            frame["_t"] = _type_key(frame["Type"])
            frame = frame.sort_values(["_t", "Method", "Variant", "Recovery"]).drop(columns="_t")
            frame = _drop_empty(frame, keep=("Type", "Method", "dense", *levels))
            tables.append(Table(slug(f"{model}_{pattern}_{col}"), f"{model} · {pattern} · {col}", frame))
    return tables


def _dense_for(dense: pd.DataFrame, col: str, row) -> str:
    """The dense value beside a row: same device and dtype, the same result set when it has one."""
    same = dense[(dense["device"] == row["device"]) & (dense["dtype"] == row["dtype"])]
    mine = same[same["result_set"] == row["result_set"]]
    vals = {fmt_value(v) for v in (mine if len(mine) else same)[col]}
    return vals.pop() if len(vals) == 1 else ("" if not vals else "several: " + ", ".join(sorted(vals)))


def registered_cards() -> list[tuple[str, str, object]]:
    """(name, axis, card) of every registered method (axis "method", methods.registry) and then
    of every KV-cache policy (axis "kv", harness.kv.POLICIES): the board's coverage rows and pages."""
    from harness.kv import POLICIES
    from methods.registry import available, build_method

    return [(name, "method", build_method(name)) for name in available()] + \
        [(name, "kv", POLICIES.build(name)) for name in POLICIES.names()]


def cells_of(cells: pd.DataFrame, name: str, axis: str = "method") -> pd.DataFrame:
    """A method's cells are the runs of that method; a KV policy's, the runs under that policy
    (on any method and model)."""
    if cells.empty:
        return cells
    if axis == "kv":
        return cells[cells["kv_policy"].fillna("").str.split(" ").str[0] == name]
    return cells[cells["method"] == name]


def coverage(frames: Frames, cells: pd.DataFrame, listed: list[dict] | None) -> list[Table]:
    """Every registered method and KV-cache policy (column Axis: method= or kv=) with its cells
    (or "no result yet"), and the list's papers that prunebench does not implement."""
    rows, implemented = [], set()
    ok = cells[cells["n_ok"] > 0] if not cells.empty else cells
    for name, axis, m in registered_cards():
        link, tags = m.paper_entry()
        implemented.add(link)
        implemented.update(m.papers())   # a method covering several papers (depth: one per metric)
        mine = cells_of(ok, name, axis)
        rows.append({"Method": name, "Axis": axis, **{v: tags.as_dict()[k] for k, v in
                                        (("type", "Type"), ("criteria", "Criteria"), ("budget", "Budget"),
                                         ("data", "Data"), ("retrain", "Retrain"), ("weights", "Weights"))},
                     "Paper": m.paper, "On the list": link or "not on the list",
                     "Cells": len(mine) if len(mine) else "no result yet"})
    for comp_link, comp in _other_components():
        implemented.add(comp_link)
    missing = []
    for row in listed or []:
        if row["paper"] not in implemented:
            missing.append({"Paper": row["title"], "Link": row["paper"], "Type": row["type"],
                            "Criteria": row["criteria"], "Budget": row["budget"], "Data": row["data"],
                            "Retrain": row["retrain"], "Weights": row["weight"], "Status": "not implemented"})
    return [Table("coverage", "Every registered method and KV-cache policy", pd.DataFrame(rows)),
            Table("not_implemented", "Papers of the Awesome-LLMs-Pruning list not implemented",
                  pd.DataFrame(missing, columns=["Paper", "Link", "Type", "Criteria", "Budget", "Data", "Retrain",
                                                 "Weights", "Status"]),
                  "From tags.json of the list (../shared/data/awesome-llms-pruning)." if listed is not None else
                  "tags.json of the list not found: the list's papers cannot be compared.")]


def _other_components() -> list[tuple[str, str]]:
    """Listed papers implemented as a grid axis rather than a method (the OWL allocator)."""
    from harness.blocks import allocators

    return [(getattr(cls, "listed", ""), name) for name, cls in allocators.ALLOCATORS.items()
            if getattr(cls, "listed", "")]


def status(frames: Frames) -> list[Table]:
    from leaderboard.frame import status_counts

    counts = status_counts(frames)
    df = frames.runs
    failed = df[df["status"] != "ok"] if not df.empty else df
    fail_cols = ["run_id", "model", "method", "level", "seed", "status", "error_stage", "error"]
    failed = failed[[c for c in fail_cols if c in failed.columns]].copy() if not failed.empty else \
        pd.DataFrame(columns=fail_cols)
    failed["error"] = failed["error"].fillna("").astype(str).str.slice(0, 200)
    return [Table("status", "Runs per cell and status", counts),
            Table("failed", "Failed runs", failed.reset_index(drop=True))]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120]


def to_markdown(table: Table) -> str:
    if table.frame.empty:
        return f"### {table.title}\n\n(no rows)\n"
    note = f"\n{table.note}\n" if table.note else ""
    return f"### {table.title}\n{note}\n{table.frame.to_markdown(index=False)}\n"


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
    table.frame.to_csv(paths["csv"], index=False, lineterminator="\n")
    paths["tex"].write_text(to_latex(table), encoding="utf-8")
    return paths


def leaderboard_markdown(sections: list[tuple[str, list[Table]]], header: list[str], problems: list,
                         plot_notes: list[str], warnings: list[str] | None = None) -> str:
    """The whole leaderboard as one Markdown page (its warnings first: skipped files, flagged values)."""
    lines = ["# prunebench leaderboard", "", *header, "", "## Warnings", ""]
    if not problems and not warnings:
        lines += ["None: every record file was read, validated and shown.", ""]
    if problems:
        lines += ["### Skipped record files", ""] + [f"- `{p}`: {why}" for p, why in problems] + [""]
    if warnings:
        lines += ["### Record fields and values", ""] + [f"- {w}" for w in warnings] + [""]
    for title, tabs in sections:
        if not tabs:
            continue
        lines += [f"## {title}", ""]
        for t in tabs:
            lines += [to_markdown(Table(t.name, t.title, t.frame.drop(columns=["run_ids"], errors="ignore"), t.note)),
                      ""]
    if plot_notes:
        lines += ["## Plots not drawn", ""] + [f"- {note}" for note in plot_notes] + [""]
    return "\n".join(lines)
