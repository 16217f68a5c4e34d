"""Flatten records into pandas frames.

`runs_frame`   one row per record: identity, the run's tags, target, measured sparsity / parameters
               removed, provenance flags, and one column per declared metric: each evaluator
               declares its numbers (record["metric_declarations"], harness.record_schema): where
               each value sits, whether higher is better, which numbers are spreads of which, the
               protocol and its settings. Nothing is inferred from key names here (version-1
               records get their declarations in harness.records_v1). A metric column's name
               carries its protocol, so numbers from different protocols never share a column.
`attach_dense` the dense baseline of the same model, dtype, device and evaluation config: delta and
               "% of dense" (dense/x for lower-is-better metrics, x/dense otherwise).
`cells_frame`  one row per cell = the full identity of what ran (the semantic config without its
               seed and thread count: method + params + version, target, allocator, recovery and its
               budget, calibration, KV policy, eval protocol, model, dtype, device). Mean, std and
               count over the seeds of that one cell; nothing else is ever averaged.
`variant`      the words that tell the cells of one method apart (what differs in their configs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Number

import pandas as pd

from harness.record_schema import declared_value, lookup
from harness.records import run_id_for, upgrade_record

TAG_AXES = ("type", "criteria", "budget", "data", "retrain", "weights")
# Config keys that are not part of a cell's identity besides the record's own NON_SEMANTIC_KEYS:
# the seed (cells aggregate over it), the thread count (moves only the last digits), whether the
# pruned model is saved and whether cached statistics are reused.
NOT_CELL = ("seed", "output")   # (kept for readers; harness.identity.canonical applies them)


@dataclass(frozen=True)
class MetricSpec:
    column: str          # the DataFrame column; its name states the protocol
    group: str           # the declaration's group: ppl | kv_ppl | ppl_prompted | zeroshot | latency | kv | other
    path: tuple          # (section, *path inside record["metrics"][section]); ("derived", name) for means
    lower_is_better: bool | None     # from the declared higher_is_better; None: not ranked (a spread)
    quality: bool        # a quality metric (ppl, accuracy) gets "% of dense"
    headline: bool       # shown in the leaderboard tables (every metric is in the CSV)
    task: str = ""       # the declared header: zero-shot task, latency setting, ... (inside its table)


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(float(v))


# How a declared setting is quoted in a column name; any other setting reads "<name> <value>".
SETTING_WORDS = {"lm_eval_version": "lm-eval {}", "num_fewshot": "{}-shot", "seq_len": "seq {}",
                 "n_windows": "{} win", "limit": "limit {}", "context_len": "context {}", "threads": "{} thr"}


def protocol_label(protocol: str, version: str | None, settings: dict) -> str:
    """'sparsegpt-wanda-ppl v1, seq 512, 8 win': the protocol, its version and every declared
    setting in declared order. Numbers whose labels differ never share a column."""
    parts = [f"{protocol}" + (f" v{version}" if version else "")] if protocol else []
    parts += [SETTING_WORDS.get(k, f"{k} {{}}").format(v) for k, v in settings.items()
              if not isinstance(v, (dict, list))]
    return ", ".join(parts)


def _columned(name: str, label: str) -> str:
    return f"{name} ({label})" if label else name


def flatten_metrics(metrics: dict, declarations: dict) -> tuple[dict[str, float], list[MetricSpec]]:
    values, specs, _ = flatten_metrics_text(metrics, declarations)
    return values, specs


def flatten_metrics_text(metrics: dict, declarations: dict
                         ) -> tuple[dict[str, float], list[MetricSpec], dict[str, str]]:
    """One column per declared number with a finite value (record_schema.declared_value), named
    '<name> (<protocol label>)', a spread named after its result ('<result column> <name>'); one
    column per declared mean (over the results present); the declared facts as text columns."""
    values: dict[str, float] = {}
    specs: list[MetricSpec] = []
    text: dict[str, str] = {}

    def add(col, value, spec_args):
        if value is not None and _is_number(value):
            values[col] = float(value)
            specs.append(MetricSpec(col, *spec_args))

    for sec, decl in (declarations or {}).items():
        node = (metrics or {}).get(sec)
        if not isinstance(node, dict):
            continue
        base = decl.get("settings") or {}
        section_label = protocol_label(decl.get("protocol", ""), decl.get("protocol_version"), base)
        result_cols = {}
        for m in decl.get("metrics") or []:
            if m["role"] == "result" or m.get("spread_of") is None:
                label = protocol_label(decl.get("protocol", ""), decl.get("protocol_version"),
                                       {**base, **(m.get("settings") or {})})
                result_cols[m["name"]] = _columned(m["name"], label)
        for m in decl.get("metrics") or []:
            hib = m.get("higher_is_better")
            col = (f"{result_cols[m['spread_of']]} {m['name']}" if m["role"] == "spread" and m.get("spread_of")
                   else result_cols[m["name"]])
            add(col, declared_value(node, m), (decl["group"], (sec, *m["path"]), None if hib is None else not hib,
                                               bool(m.get("quality")), bool(m.get("headline")), m.get("header", "")))
        for mean in decl.get("means") or []:
            by_name = {m["name"]: m for m in decl.get("metrics") or []}
            got = [v for v in (declared_value(node, by_name[n]) for n in mean["of"]) if v is not None]
            if got:
                col = f"{mean['name']} ({len(got)} {mean['over']}, {section_label})"
                add(col, sum(got) / len(got), (decl["group"], ("derived", mean["name"]),
                                               not mean["higher_is_better"], bool(mean["quality"]), True,
                                               mean["header"]))
        for label, path in (decl.get("facts") or {}).items():
            v = lookup(node, path)
            if isinstance(v, str) and v:
                text[label] = v
    return values, specs, text


def target_label(target: dict) -> str:
    if target.get("pattern") in (None, "none"):
        return "dense"
    if target.get("n") and target.get("m"):
        return f"{target['n']}:{target['m']}"
    if target.get("pattern") == "shape" and target.get("shape"):   # a named architecture, not a ratio
        s = target["shape"]
        return f"{s['layers']}L {s['heads']}/{s['kv_heads']}h {s['intermediate']}/{s['hidden']}"
    if target.get("count"):
        return f"{target['count']} {target.get('sublayer') or target['pattern']}"
    if target.get("ratio") is not None:
        suffix = {"blocks": " blocks", "width": " params"}.get(target.get("pattern"), "")
        return f"{round(100 * float(target['ratio']), 1):g}%{suffix}"
    return str(target.get("name"))


def cell_config(config: dict) -> dict:
    """The config that identifies a cell: harness.identity's canonical form (fields at their default
    dropped, no seed) without the thread count (it moves only the last digits)."""
    from harness.identity import canonical
    from harness.validate import param_defaults

    c = canonical(config or {}, param_defaults(config or {}), with_seed=False)["config"]
    if isinstance(c.get("runtime"), dict):
        c["runtime"] = {k: v for k, v in c["runtime"].items() if k != "threads"} or None
        if c["runtime"] is None:
            c.pop("runtime")
    return c


def _data(provenance: dict | None, roles=("calib", "eval", "recovery")) -> dict:
    """The data files a run read, as its record's provenance states them ({'calib:c4/train': sha256, ...}).
    Never recomputed from the config: that would hash whatever file this machine holds today."""
    hashes = (provenance or {}).get("data_sha256") or {}
    return {str(k): v for k, v in sorted(hashes.items()) if str(k).split(":")[0] in roles} \
        if isinstance(hashes, dict) else {}


def cell_id(config: dict, method_version: str | None = None, provenance: dict | None = None) -> str:
    """Runs differing only by seed (or thread count) share a cell; a new method version is a new cell,
    and so is a run on other data (the data hashes of the record's own provenance)."""
    return run_id_for({"cell": cell_config(config), "data": _data(provenance), "method_version": method_version})


def pruned_id(config: dict, method_version: str | None = None) -> str:
    """The identity of the pruned model (the cell without its evaluation): joins a latency or
    zero-shot run with the perplexity run of the same model."""
    c = {k: v for k, v in cell_config(config).items() if k not in ("eval", "kv")}
    # no data hashes here: recomputed from a record's config they depend on this machine's data dir
    return run_id_for({"cell": c, "method_version": method_version, "seed": (config or {}).get("seed")})


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
    return out


def _variant_config(config: dict, method: dict) -> dict:
    """Dotted keys of the cell's canonical config (a key at its default is absent), with the method's
    parameters as the record states them in full (so a row reads permute=False, not "default")."""
    flat = {k: v for k, v in _flat(cell_config(config)).items() if not k.startswith("method.params.")}
    flat.update(_flat({"method": {"params": method.get("params") or {}}}))
    return flat


def _run_tags(record: dict) -> dict:
    """The run's tags: as recorded (record.tags); for older records, recomputed from the method's
    current paper tags and what ran (pattern, recovery)."""
    if isinstance(record.get("tags"), dict) and record["tags"].get("type"):
        return record["tags"]
    from methods.registry import build_method, UnknownMethodError
    from harness.tags import run_tags

    method = record.get("method") or {}
    target = record.get("target") or {}
    try:
        m = build_method(method.get("name"), method.get("params") or {})
        _, paper = m.paper_entry(target.get("pattern"))
        return run_tags(paper, target.get("pattern"), (record.get("recovery") or {}).get("name"),
                        bool(getattr(m, "updates_weights", False)), bool(m.needs_calibration))
    except (UnknownMethodError, ValueError, TypeError):
        return method.get("tags") or {}


def kv_label(kv: dict | None) -> str:
    if not kv or kv.get("name", "none") == "none":
        return ""
    params = kv.get("params") or {}
    inner = ", ".join(f"{k} {v}" for k, v in params.items() if k in ("budget", "window", "sink", "tau"))
    return f"{kv['name']} ({inner})" if inner else kv["name"]


def _identity_columns(record: dict, config: dict, method: dict, result_set: str | None) -> dict:
    """Which run, which cell it belongs to, and how it ended."""
    error = record.get("error") or {}
    return {
        # a cell never spans two result sets (their runs came from different code / machines)
        "run_id": record["run_id"],
        "cell_id": run_id_for({"c": cell_id(config, method.get("version"), record.get("provenance")),
                               "set": result_set or ""}),
        "_cell_config": run_id_for({"c": cell_id(config, method.get("version")), "set": result_set or ""}),
        "_cell_data": _data(record.get("provenance")),
        "pruned_id": pruned_id(config, method.get("version")), "status": record["status"],
        "eval_id": run_id_for({"eval": config.get("eval"), "kv": config.get("kv")})[:8],
        "error_stage": error.get("stage"), "error": (f"{error.get('type')}: {error.get('message')}"
                                                     if error else None),
    }


def _method_columns(record: dict, method: dict) -> dict:
    """The method (or KV policy), its label and the tags it is grouped by."""
    kv = record.get("kv") or {}
    tags = _run_tags(record)
    kvl = kv_label(kv)
    if kvl and method.get("name") == "dense":
        tags = {**(kv.get("tags") or tags)}
        if tags.get("retrain") == "Without retraining":   # records written before the list's vocabulary
            tags = {**tags, **{"type": "Other", "criteria": "Other", "budget": "Sparsity-KV cache",
                               "data": "Data free", "retrain": "Without", "weights": "Frozen"}}
    return {
        "method": method.get("name"), "method_version": method.get("version"),
        # "reconstructed": built from the paper's text alone (records before this field: reference)
        "fidelity": method.get("fidelity", "reference"),
        "method_params": json.dumps(method.get("params") or {}, sort_keys=True),
        "kv_policy": kvl, "label": (f"{method.get('name')} + {kv.get('name')}" if kvl and method.get("name") != "dense"
                                    else kv.get("name") if kvl else method.get("name")),
        **{axis: tags.get(axis) for axis in TAG_AXES}, "qualifier": tags.get("qualifier"),
        "group_type": tags.get("type"), "listed": method.get("listed"),
    }


def _setup_columns(record: dict) -> dict:
    """Model, target, allocator, recovery and calibration of the run."""
    model = record.get("model") or {}
    target = record.get("target") or {}
    allocator = record.get("allocator") or {}
    calib = record.get("calibration") or {}
    return {
        "model": model.get("name"), "family": model.get("family"),
        "quantized_source": "Q4_1" in str((model.get("source") or {}).get("file", "")),
        "target": target.get("name"), "pattern": target.get("pattern"), "ratio": target.get("ratio"),
        "n": target.get("n"), "m": target.get("m"), "count": target.get("count"), "level": target_label(target),
        "allocator": allocator.get("name") if isinstance(allocator, dict) else allocator,
        "recovery": (record.get("recovery") or {}).get("name"),
        "calibration": (f"{calib.get('corpus')} {calib.get('n_samples')}x{calib.get('seq_len')}"
                        if calib else None),
    }


def _env_columns(config: dict, env: dict) -> dict:
    """Seed and machine, and the reproducibility flags a reader should see."""
    git = env.get("git") or {}
    return {
        "seed": config.get("seed"), "device": env.get("device"), "dtype": str(env.get("dtype", "")).replace("torch.", ""),
        "threads": env.get("threads"), "git_sha": git.get("sha"), "git_dirty": git.get("dirty"),
        "lock_sha256": (env.get("lock") or {}).get("sha256"),
        "flags": ", ".join(f for f, bad in (("dirty tree", git.get("dirty") is True),
                                              ("no git SHA", not git.get("sha")),
                                              ("no lock", not (env.get("lock") or {}).get("sha256"))) if bad),
    }


def _measured_columns(record: dict) -> dict:
    """Sparsity and parameter counts as measured after pruning, and the peak memory."""
    measured = record.get("measured") or {}
    before, after = measured.get("params_before"), measured.get("params_after")
    return {
        "sparsity_blocks": measured.get("sparsity_blocks"), "sparsity_total": measured.get("sparsity_total"),
        "bits_per_weight": measured.get("bits_per_weight"),   # quantised models only (harness.quant)
        "params_before": before, "params_after": after,
        "params_removed": (1 - after / before) if _is_number(before) and _is_number(after) and before else None,
        "blocks_removed": ((record.get("prune_report") or {}).get("removed") or {}).get("count"),
        "peak_rss_bytes": (record.get("memory") or {}).get("peak_rss_bytes"),
    }


def flatten_record(record: dict, path: str | None = None, result_set: str | None = None) -> tuple[dict, list[MetricSpec]]:
    """One row of the runs frame (column groups in this order: identity, method, setup, environment,
    measured, source, timings, metrics) and the specs of its metric columns."""
    record = upgrade_record(record)     # a record read without harness.records gets its declarations here
    method = record.get("method") or {}
    config = record.get("config") or {}
    row = {**_identity_columns(record, config, method, result_set), **_method_columns(record, method),
           **_setup_columns(record), **_env_columns(config, record.get("env") or {}), **_measured_columns(record),
           "record_path": str(path) if path else None, "result_set": result_set,
           "config_flat": json.dumps(_variant_config(config, method), sort_keys=True, default=str)}
    for k, v in (record.get("timing") or {}).items():
        if _is_number(v):
            row[f"timing {k}"] = float(v)
    values, specs, text = flatten_metrics_text(record.get("metrics") or {}, record.get("metric_declarations") or {})
    row.update(values)
    row.update(text)
    return row, specs


def is_dense(df: pd.DataFrame) -> pd.Series:
    """Dense baselines: Type=Baseline, no sparsity target and no KV policy."""
    return (df["type"] == "Baseline") & (df["pattern"].fillna("none") == "none") & (df["kv_policy"].fillna("") == "")


class Frames:
    """The runs frame plus the metric catalogue (column -> MetricSpec), in first-seen order."""

    def __init__(self, runs: pd.DataFrame, specs: dict[str, MetricSpec]):
        self.runs = runs
        self.specs = specs

    def metric_columns(self, group: str | None = None, headline: bool = True) -> list[str]:
        return [c for c, s in self.specs.items() if (group is None or s.group == group)
                and (s.headline or not headline) and c in self.runs.columns]


def _within(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def _join_partial_provenance(rows: list[dict]) -> None:
    """A run that stopped early (a failed run) records only the data it read before it stopped; it
    joins the cell of the same config whose recorded data hashes include every hash it has, when
    exactly one such cell exists. Runs whose recorded hashes disagree stay in cells of their own."""
    by_config: dict[str, list[dict]] = {}
    for row in rows:
        by_config.setdefault(row.pop("_cell_config"), []).append(row)
    for group in by_config.values():
        datas = [json.loads(d) for d in sorted({json.dumps(r["_cell_data"], sort_keys=True) for r in group})]
        for row in group:
            mine = row["_cell_data"]
            hosts = [d for d in datas if d != mine and _within(mine, d)]
            hosts = [h for h in hosts if not any(o != h and _within(h, o) for o in hosts)]   # the fullest
            if len(hosts) == 1:
                row["cell_id"] = next(r["cell_id"] for r in group if r["_cell_data"] == hosts[0])
    for row in rows:
        row.pop("_cell_data")


def runs_frame(records: list[dict], paths: list | None = None, sets: list | None = None) -> Frames:
    rows, specs = [], {}
    for i, record in enumerate(records):
        row, row_specs = flatten_record(record, paths[i] if paths else None, sets[i] if sets else None)
        rows.append(row)
        for s in row_specs:
            specs.setdefault(s.column, s)
    _join_partial_provenance(rows)
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["run_id", "cell_id", "status", "method", "label", *TAG_AXES, "group_type",
                                     "model", "target", "pattern", "ratio", "level", "seed", "kv_policy", "variant"])
    else:
        runs["variant"] = variants(runs)
    frames = Frames(runs, specs)
    attach_dense(frames)
    return frames


# Shown as their own columns (or tables), so not repeated in the variant words; output.* and
# prune.reuse change no number (where to save, whether to reuse cached statistics).
_OWN_PREFIXES = ("method.name", "target.", "model.", "recovery.name", "allocator.name", "kv.name", "eval.",
                 "runtime.", "output.", "prune.reuse", "method_version")
_VARIANT_GROUP = ["label", "model", "target", "eval_id", "recovery", "allocator", "device", "dtype"]


def _short(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "method" and parts[1:2] == ["params"]:
        return ".".join(parts[2:])
    return ".".join(parts[-2:]) if len(parts) > 2 else key


def variants(runs: pd.DataFrame) -> list[str]:
    """Per run: `key=value` for every config key on which the cells of one table row group (same
    method label, model, target, eval, recovery, allocator, device, dtype) differ: the words that tell
    two rows apart; cells that still look alike are told apart by their result set or cell id."""
    flat = runs["config_flat"].map(json.loads)
    out = [""] * len(runs)
    for _, idx in runs.groupby(_VARIANT_GROUP, dropna=False).groups.items():
        idx = list(idx)
        cells = {runs.at[i, "cell_id"]: flat[i] for i in idx}
        if len(cells) < 2:
            continue
        keys = sorted({k for c in cells.values() for k in c})
        # method parameters: a key one record lacks is an older parameter set (the version tells);
        # other keys: absent = at its default (canonical form)
        differ = [k for k in keys if not k.startswith(_OWN_PREFIXES)
                  and (not k.startswith("method.params.") or all(k in c for c in cells.values()))
                  and len({json.dumps(c.get(k, "default"), sort_keys=True, default=str) for c in cells.values()}) > 1]
        versions = {runs.at[j, "method_version"] for j in idx}
        for i in idx:
            c = flat[i]
            words = [f"{_short(k)}={c.get(k, 'default')}" for k in differ]
            if len(versions) > 1:
                words.insert(0, f"v{runs.at[i, 'method_version']}")
            alone = len({runs.at[j, "result_set"] for j in idx}) > 1   # the Set column tells them apart
            out[runs.index.get_loc(i)] = " ".join(words) or ("" if alone else f"config {runs.at[i, 'cell_id'][:6]}")
    return out


def attach_dense(frames: Frames) -> None:
    """Per metric column: the dense value of the same model, dtype, device and eval config (same seed
    when there is one, else the mean over the dense seeds), the delta and the % of dense."""
    df = frames.runs
    if df.empty:
        return
    ok = df["status"] == "ok"
    dense = df[ok & is_dense(df)]
    for col in frames.metric_columns(headline=True):
        spec = frames.specs[col]
        base = pd.Series(float("nan"), index=df.index)
        if not dense.empty and col in dense:
            levels = [["model", "dtype", "device", "eval_id", "seed"], ["model", "dtype", "device", "eval_id"]]
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


ID_COLUMNS = ("cell_id", "group_type", "type", "method", "label", "variant", "method_version", "method_params",
              *TAG_AXES[1:], "qualifier", "listed", "model", "family", "quantized_source", "target", "pattern", "ratio",
              "n", "m", "count", "level", "allocator", "recovery", "kv_policy", "calibration", "device", "dtype",
              "kernel path", "result_set")


def cells_frame(frames: Frames) -> pd.DataFrame:
    """One row per cell: `<col>` mean, `<col> std` (only over >1 seed), `n_ok`/`n_failed`,
    seeds (the seed values that ran), run ids, provenance flags."""
    df = frames.runs
    if df.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, "n_ok", "n_failed", "seeds", "n_seeds", "run_ids"])
    ids = [c for c in ID_COLUMNS if c in df.columns]
    out = []
    for _, g in df.groupby("cell_id", sort=False, dropna=False):
        first = g.iloc[0]
        row = {c: first[c] for c in ids}
        ok = g[g["status"] == "ok"]
        seeds = sorted(ok["seed"].dropna().unique())
        row.update({"n_ok": len(ok), "n_failed": int((g["status"] == "failed").sum()),
                    "seeds": ",".join(str(s) for s in sorted(g["seed"].dropna().unique())),
                    "n_seeds": len(seeds),
                    "run_ids": ",".join(g["run_id"]), "sparsity_blocks": ok["sparsity_blocks"].mean(),
                    "params_removed": ok["params_removed"].mean(), "blocks_removed": ok["blocks_removed"].max(),
                    "flags": ", ".join(sorted({f for fl in g["flags"].fillna("") for f in fl.split(", ") if f})),
                    "errors": "; ".join(sorted({f"{e}" for e in g["error"].dropna()}))[:500] or None})
        for col in frames.metric_columns(headline=False):
            for suffix in ("", " Δ dense", " % dense"):
                c = f"{col}{suffix}"
                if c in ok:
                    vals = ok[c].dropna()
                    row[c] = vals.mean() if len(vals) else float("nan")
                    # spread only over different seeds of the cell (never over repeats of one seed)
                    row[f"{c} std"] = vals.std(ddof=1) if len(vals) > 1 and len(seeds) > 1 else float("nan")
                    if not suffix:
                        row[f"{col} n"] = len(vals)
        out.append(row)
    return pd.DataFrame(out)


def status_counts(frames: Frames) -> pd.DataFrame:
    """Runs per model × method × level and status, so gaps (failed cells) are visible."""
    df = frames.runs
    if df.empty:
        return pd.DataFrame(columns=["model", "method", "level", "ok", "failed"])
    t = (df.groupby(["model", "label", "level", "status"]).size().unstack("status", fill_value=0)
         .reindex(columns=["ok", "failed"], fill_value=0).reset_index()
         .rename(columns={"label": "method"}))
    t.columns.name = None
    return t
