"""Flatten records into pandas frames.

`runs_frame`   one row per record: identity, tags, target, measured sparsity, timings, and one column
               per metric. Metric columns are found generically by walking `record["metrics"]`, so a
               new evaluator's numbers appear without code here; each metric column's name carries
               its protocol (e.g. "ppl wikitext2 (sparsegpt-wanda-ppl v1, seq 512, 8 win)"), so
               numbers from different protocols never share a column.
`attach_dense` the dense baseline of the same model and evaluation protocol (same column): delta and
               "% of dense" (quality retained: dense/x for lower-is-better metrics, x/dense otherwise).
`cells_frame`  one row per grid cell (the config without its seed): mean, std and count over seeds,
               plus how many of the cell's runs failed or were skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Number

import pandas as pd

from harness.records import run_id_for

TAG_AXES = ("type", "criteria", "budget", "data", "retrain", "weights")
# Scalar fields of a metric's dict (or its ancestors') that define its protocol, in label order.
PROTOCOL_FIELDS = ("protocol", "protocol_version", "lm_eval_version", "version", "task_version",
                   "num_fewshot", "seq_len", "n_windows", "limit", "context", "context_len", "prompt_len",
                   "new_tokens", "chunk", "batch", "dtype")
# Numeric leaves that describe how a number was taken rather than being a result.
NOT_A_RESULT = {"protocol_version", "version", "seq_len", "n_windows", "n_windows_implied", "max_windows", "n_tokens", "nll_sum",
                "batch_size", "eval_s", "tokens_per_s", "limit", "num_fewshot", "n", "n_samples",
                "task_version", "context", "context_len", "prompt_len", "new_tokens", "chunk", "batch", "repeats",
                "warmup", "layers", "kv_heads", "head_dim", "capacity", "tokens_seen", "tokens_held", "evictions"}
SPREAD_WORDS = ("std", "stderr", "spread", "iqr", "min", "max", "p10", "p90", "p25", "p75", "mad")
ZEROSHOT_GROUPS = ("zeroshot", "zero_shot", "lm_eval")
LATENCY_GROUPS = ("latency",)
KV_GROUPS = ("kv", "kv_memory", "kv_cache")


@dataclass(frozen=True)
class MetricSpec:
    column: str          # the DataFrame column; its name states the protocol
    group: str           # ppl | zeroshot | latency | kv | other
    path: tuple          # path inside record["metrics"] ("derived" for computed columns)
    lower_is_better: bool | None
    quality: bool        # a quality metric (ppl, accuracy) gets "% of dense"
    headline: bool       # shown in the leaderboard tables (every metric is in the CSV)


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(float(v))


def _fmt_protocol(chain: list[dict]) -> str:
    """Protocol words from the dicts on the path to a metric (outermost first, innermost wins)."""
    merged: dict = {}
    for d in chain:
        merged.update({k: d[k] for k in PROTOCOL_FIELDS if k in d and not isinstance(d[k], (dict, list))})
    parts = []
    if "protocol" in merged:
        v = merged.get("protocol_version")
        parts.append(f"{merged['protocol']}" + (f" v{v}" if v is not None else ""))
    if "lm_eval_version" in merged:
        parts.append(f"lm-eval {merged['lm_eval_version']}")
    if "task_version" in merged:
        parts.append(f"task v{merged['task_version']}")
    if merged.get("num_fewshot") is not None:
        parts.append(f"{merged['num_fewshot']}-shot")
    if "seq_len" in merged:
        parts.append(f"seq {merged['seq_len']}")
    if "n_windows" in merged:
        parts.append(f"{merged['n_windows']} win")
    if merged.get("limit") is not None:
        parts.append(f"limit {merged['limit']}")
    for k in ("context", "context_len", "prompt_len", "new_tokens", "chunk", "batch", "dtype"):
        if merged.get(k) is not None:
            parts.append(f"{k.replace('_len', '')} {merged[k]}")
    return ", ".join(parts)


def _classify(path: tuple[str, ...]) -> tuple[str, bool | None, bool, bool]:
    """(group, lower_is_better, quality, headline) for a numeric leaf at `path`."""
    top, leaf = path[0], path[-1]
    spread = any(w in leaf.lower().split("_") or leaf.lower().endswith(w) for w in SPREAD_WORDS)
    if top == "ppl" or top.endswith("_ppl"):  # e.g. kv_ppl: perplexity under a bounded KV cache
        return "ppl", True, True, leaf == "value"
    if top in ZEROSHOT_GROUPS:
        return "zeroshot", False, True, leaf in ("acc", "acc_norm") and not spread
    if top in LATENCY_GROUPS:
        return "latency", True, False, ("ms" in leaf.lower().split("_") or leaf.endswith("_ms")) and not spread
    if top in KV_GROUPS:
        # the measured cache bytes; analytic / per-token / process-RSS figures stay in the CSV only
        return "kv", True, False, ("bytes" in leaf.lower() and not spread
                                   and not any(w in leaf for w in ("analytic", "per_token", "rss")))
    return "other", None, False, leaf == "value"


def _label(group: str, path: tuple[str, ...], protocol: str) -> str:
    inner = [p for p in path[1:] if p != "value"]
    if group == "ppl":
        words = [path[0], *inner]
    elif group == "zeroshot":
        words = [*inner]
    else:
        words = [path[0], *inner]
    label = " ".join(words)
    return f"{label} ({protocol})" if protocol else label


def flatten_metrics(metrics: dict) -> tuple[dict[str, float], list[MetricSpec]]:
    """Every finite numeric leaf of `metrics` -> {column: value} plus its spec.

    A zero-shot run also gets `mean acc` over its tasks (the usual summary of the papers' tables);
    the column names the task count so runs on different task sets are not averaged together.
    """
    values: dict[str, float] = {}
    specs: list[MetricSpec] = []

    def walk(node: dict, path: tuple, chain: list[dict]) -> None:
        for key, v in node.items():
            p = (*path, str(key))
            if isinstance(v, dict):
                walk(v, p, [*chain, v])
            elif _is_number(v) and len(p) >= 2 and p[-1] not in NOT_A_RESULT and not p[-1].endswith("_s"):
                group, lower, quality, headline = _classify(p)
                col = _label(group, p, _fmt_protocol(chain))
                values[col] = float(v)
                specs.append(MetricSpec(col, group, p, lower, quality, headline))

    walk(metrics or {}, (), [metrics or {}])
    # the task is the dict holding `acc` (metrics.zeroshot.<task>.acc, or deeper)
    accs = {"/".join(s.path[1:-1]): values[s.column] for s in specs
            if s.group == "zeroshot" and s.path[-1] == "acc" and len(s.path) >= 3}
    if accs:
        protocols = {s.column.partition("(")[2].rstrip(")") for s in specs
                     if s.group == "zeroshot" and s.path[-1] == "acc"}
        proto = protocols.pop() if len(protocols) == 1 else "mixed protocols"
        col = f"zero-shot mean acc ({len(accs)} tasks{', ' + proto if proto else ''})"
        values[col] = sum(accs.values()) / len(accs)
        specs.append(MetricSpec(col, "zeroshot", ("derived", "mean_acc"), False, True, True))
    return values, specs


def target_label(target: dict) -> str:
    if target.get("pattern") in (None, "none"):
        return "dense"
    if target.get("n") and target.get("m"):
        return f"{target['n']}:{target['m']}"
    if target.get("count"):
        return f"{target['count']} {target.get('sublayer') or target['pattern']}"
    if target.get("ratio") is not None:
        return f"{round(100 * float(target['ratio']), 1):g}%"
    return str(target.get("name"))


def group_type(method_type: str | None, pattern: str | None) -> str | None:
    """The Type a run is listed under: an N:M run is Semi-structured whatever its method's own tag
    (Wanda 2:4 sits with the semi-structured results, as in the papers' tables)."""
    return "Semi-structured" if pattern == "nm" and method_type == "Unstructured" else method_type


def cell_id(config: dict) -> str:
    """The run id of the config with its seed removed: runs differing only by seed share a cell."""
    from harness.identity import cell_id_for

    return cell_id_for(config or {})


def flatten_record(record: dict, path: str | None = None) -> tuple[dict, list[MetricSpec]]:
    method = record.get("method") or {}
    tags = method.get("tags") or {}
    target = record.get("target") or {}
    model = record.get("model") or {}
    config = record.get("config") or {}
    measured = record.get("measured") or {}
    env = record.get("env") or {}
    error = record.get("error") or {}
    calib = record.get("calibration") or {}
    recovery = record.get("recovery") or {}
    allocator = record.get("allocator") or {}
    row = {
        "run_id": record["run_id"], "cell_id": cell_id(config), "status": record["status"],
        "eval_id": run_id_for({"eval": config.get("eval")})[:8],
        "error_stage": error.get("stage"), "error": (f"{error.get('type')}: {error.get('message')}"
                                                     if error else None),
        "method": method.get("name"), "method_version": method.get("version"),
        "method_params": json.dumps(method.get("params") or {}, sort_keys=True),
        **{axis: tags.get(axis) for axis in TAG_AXES}, "qualifier": tags.get("qualifier"),
        "group_type": group_type(tags.get("type"), target.get("pattern")),
        "model": model.get("name"), "family": model.get("family"),
        "target": target.get("name"), "pattern": target.get("pattern"), "ratio": target.get("ratio"),
        "n": target.get("n"), "m": target.get("m"), "level": target_label(target),
        "allocator": allocator.get("name") if isinstance(allocator, dict) else allocator,
        "recovery": recovery.get("name"),
        "calibration": (f"{calib.get('corpus')} {calib.get('n_samples')}x{calib.get('seq_len')}"
                        if calib else None),
        "seed": config.get("seed"), "device": env.get("device"), "dtype": env.get("dtype"),
        "threads": env.get("threads"), "git_sha": (env.get("git") or {}).get("sha"),
        "sparsity_blocks": measured.get("sparsity_blocks"), "sparsity_total": measured.get("sparsity_total"),
        "params_before": measured.get("params_before"), "params_after": measured.get("params_after"),
        "peak_rss_bytes": (record.get("memory") or {}).get("peak_rss_bytes"),
        "record_path": str(path) if path else None,
    }
    for k, v in (record.get("timing") or {}).items():
        if _is_number(v):
            row[f"timing {k}"] = float(v)
    values, specs = flatten_metrics(record.get("metrics") or {})
    row.update(values)
    return row, specs


def is_dense(df: pd.DataFrame) -> pd.Series:
    """Dense baselines are the records tagged Type=Baseline with no sparsity target."""
    return (df["type"] == "Baseline") & (df["pattern"].fillna("none") == "none")


class Frames:
    """The runs frame plus the metric catalogue (column -> MetricSpec), in first-seen order."""

    def __init__(self, runs: pd.DataFrame, specs: dict[str, MetricSpec]):
        self.runs = runs
        self.specs = specs

    def metric_columns(self, group: str | None = None, headline: bool = True) -> list[str]:
        return [c for c, s in self.specs.items() if (group is None or s.group == group)
                and (s.headline or not headline) and c in self.runs.columns]


def runs_frame(records: list[dict], paths: list | None = None) -> Frames:
    rows, specs = [], {}
    for i, record in enumerate(records):
        row, row_specs = flatten_record(record, paths[i] if paths else None)
        rows.append(row)
        for s in row_specs:
            specs.setdefault(s.column, s)
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["run_id", "cell_id", "status", "method", *TAG_AXES, "model", "target",
                                     "pattern", "ratio", "level", "seed"])
    frames = Frames(runs, specs)
    attach_dense(frames)
    return frames


def attach_dense(frames: Frames) -> None:
    """Per metric column: the dense value of the same model, dtype and eval config (same seed when
    there is one, else the mean over the dense seeds; random-init test models differ per seed), the delta and the % of dense, as `<col> Δ dense` / `<col> % dense`."""
    df = frames.runs
    if df.empty:
        return
    ok = df["status"] == "ok"
    dense = df[ok & is_dense(df)]
    for col in frames.metric_columns(headline=True):
        spec = frames.specs[col]
        base = pd.Series(float("nan"), index=df.index)
        if not dense.empty and col in dense:
            # dtype too: a bf16 dense number is no baseline for a float32 pruned one. The same eval
            # config first (it may hold settings such as a KV-cache policy that the column name lacks)
            levels = [["model", "dtype", "eval_id", "seed"], ["model", "dtype", "eval_id"], ["model", "dtype"]]
            tables = [dense.groupby(keys, dropna=False)[col].mean() for keys in levels]
            for idx, row in df.iterrows():
                v = float("nan")
                for keys, table in zip(levels, tables):
                    v = table.get(tuple(row[k] for k in keys), float("nan"))
                    if not pd.isna(v):
                        break
                base.at[idx] = v
        df[f"{col} dense"] = base
        df[f"{col} Δ dense"] = df[col] - base
        if spec.quality:
            df[f"{col} % dense"] = 100 * (base / df[col] if spec.lower_is_better else df[col] / base)


ID_COLUMNS = ("cell_id", "group_type", "type", "method", "method_version", "method_params", *TAG_AXES[1:], "qualifier",
              "model", "family", "target", "pattern", "ratio", "n", "m", "level", "allocator", "recovery",
              "calibration", "device", "dtype")


def cells_frame(frames: Frames) -> pd.DataFrame:
    """One row per cell: `<col>` mean, `<col> std`, `n_ok`/`n_failed`/`n_skipped`, seeds, run ids."""
    df = frames.runs
    if df.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, "n_ok", "n_failed", "n_skipped", "seeds", "run_ids"])
    ids = [c for c in ID_COLUMNS if c in df.columns]
    out = []
    for _, g in df.groupby("cell_id", sort=False, dropna=False):
        first = g.iloc[0]
        row = {c: first[c] for c in ids}
        ok = g[g["status"] == "ok"]
        row.update({"n_ok": len(ok), "n_failed": int((g["status"] == "failed").sum()),
                    "n_skipped": int((g["status"] == "skipped").sum()),
                    "seeds": ",".join(str(s) for s in sorted(g["seed"].dropna().unique())),
                    "run_ids": ",".join(g["run_id"]), "sparsity_blocks": ok["sparsity_blocks"].mean(),
                    "errors": "; ".join(sorted({f"{e}" for e in g["error"].dropna()}))[:500] or None})
        for col in frames.metric_columns(headline=True):
            for suffix in ("", " Δ dense", " % dense"):
                c = f"{col}{suffix}"
                if c in ok:
                    vals = ok[c].dropna()
                    row[c] = vals.mean() if len(vals) else float("nan")
                    row[f"{c} std"] = vals.std(ddof=1) if len(vals) > 1 else float("nan")
                    if not suffix:
                        row[f"{col} n"] = len(vals)
        out.append(row)
    return pd.DataFrame(out)


def status_counts(frames: Frames) -> pd.DataFrame:
    """Runs per model × method × level and status, so gaps (failed / skipped cells) are visible."""
    df = frames.runs
    if df.empty:
        return pd.DataFrame(columns=["model", "method", "level", "ok", "failed", "skipped"])
    t = (df.groupby(["model", "method", "level", "status"]).size().unstack("status", fill_value=0)
         .reindex(columns=["ok", "failed", "skipped"], fill_value=0).reset_index())
    t.columns.name = None
    return t
