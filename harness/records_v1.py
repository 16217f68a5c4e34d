"""The version-1 record reader: derives a v1 record's metric declarations from its key names.

Schema version 1 stored each evaluator's values without saying which were results, which way they
rank or which protocol settings they were taken under; the leaderboard used to guess all three from
key names. Version 2 records carry that as `metric_declarations` (harness.record_schema), written by
the evaluators themselves. This module is the only place the old guessing remains: it runs once per
v1 record, when harness.records.upgrade_record reads it, and produces the declarations the v1
leaderboard's columns implied, so every committed v1 record lands in the columns it always did
(same names, same directions, same headline and "% of dense" choices).
"""

from __future__ import annotations

import math
from numbers import Number

from harness.record_schema import MetricDeclaration, SectionDeclaration, result, section, spread

# v1 key conventions. Scalar fields of a section (or of a metric's dict) that were quoted in its
# column's protocol, in the order they were quoted; values None were left out, except where noted.
QUOTED_SETTINGS = ("lm_eval_version", "num_fewshot", "seq_len", "n_windows", "limit", "context", "context_len",
                   "chunk", "device", "dtype", "threads")
# quoted even when null (v1 wrote "seq None" had it ever been null; no committed record has one)
QUOTED_WHEN_NULL = ("lm_eval_version", "seq_len", "n_windows")
# Keys of an unknown section that were never results, and key words that marked a spread.
NOT_A_RESULT = {"protocol_version", "version", "seq_len", "n_windows", "max_windows", "n_tokens", "nll_sum",
                "batch_size", "eval_s", "tokens_per_s", "limit", "num_fewshot", "n", "n_samples", "n_total",
                "n_windows_implied",
                "task_version", "context", "context_len", "prompt_len", "new_tokens", "chunk", "batch", "repeats",
                "warmup", "layers", "kv_heads", "head_dim", "capacity", "tokens_seen", "tokens_held", "evictions",
                "data_rows", "threads", "bootstrap_iters", "max_length", "cpu_count", "params", "swapped_linears"}
SPREAD_WORDS = ("std", "stderr", "spread", "iqr", "min", "max", "p10", "p90", "p25", "p75", "mad", "q1", "q3")
# fields that told a v1 dict's protocol (the quoted ones plus those only used to tell protocols apart)
PROTOCOL_FIELDS = ("protocol", "protocol_version", "version", "task_version", "prompt_len", "new_tokens", "batch",
                   *QUOTED_SETTINGS)


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(float(v))


def _protocol(*dicts: dict) -> tuple[str, str | None, dict]:
    """(protocol, version, quoted settings) of the merged scalar protocol fields of `dicts`."""
    merged: dict = {}
    for d in dicts:
        merged.update({k: d[k] for k in PROTOCOL_FIELDS if k in d and not isinstance(d[k], (dict, list))})
    version = merged.get("protocol_version")
    settings = {k: merged[k] for k in QUOTED_SETTINGS
                if k in merged and (merged[k] is not None or k in QUOTED_WHEN_NULL)}
    return str(merged.get("protocol", "")), (None if version is None else str(version)), settings


def _declared_direction(d, default: bool | None) -> bool | None:
    """higher_is_better as a v1 dict stated it, else the default."""
    hib = d.get("higher_is_better") if isinstance(d, dict) else None
    return hib if isinstance(hib, bool) else default


def _ppl(top: str, node: dict) -> SectionDeclaration:
    group = "ppl" if top == "ppl" else "kv_ppl"
    metrics: list[MetricDeclaration] = []
    protocol, version = "", None
    for ds, d in node.items():
        if isinstance(d, dict) and "value" in d:
            protocol, version, settings = _protocol(d)
            label = f"ppl {ds}" if top == "ppl" else f"bounded-cache ppl {ds}"
            metrics.append(result(label, [ds, "value"], bool(_declared_direction(d, False)), quality=True,
                                  header=ds, settings=settings))
    return section(protocol, version, group, metrics)


def _zeroshot(node: dict) -> SectionDeclaration:
    nested = isinstance(node.get("tasks"), dict)
    tasks = node["tasks"] if nested else {k: v for k, v in node.items() if isinstance(v, dict)}
    protocol, version, settings = _protocol(node)
    metrics: list[MetricDeclaration] = []
    accs = []
    for task, d in tasks.items():
        for metric in ("acc", "acc_norm"):
            if metric not in d:
                continue
            base = ["tasks", task] if nested else [task]
            own = {} if protocol else _protocol(node, d)[2]
            m = result(f"{task} {metric}", [*base, metric], bool(_declared_direction(d, True)), quality=True,
                       headline=metric == "acc", settings=own)
            metrics.append(m)
            if f"{metric}_stderr" in d:
                metrics.append(spread("stderr", m, [*base, f"{metric}_stderr"]))
            if metric == "acc":
                accs.append(m["name"])
    means = [{"name": "zero-shot mean acc", "header": "mean acc", "of": accs, "over": "tasks",
              "higher_is_better": True, "quality": True}] if accs else None
    return section(protocol, version, "zeroshot", metrics, settings=settings, means=means)


def _latency(node: dict) -> SectionDeclaration:
    protocol, version, settings = _protocol(node)
    metrics: list[MetricDeclaration] = []
    for i, p in enumerate(node.get("prefill") or []):
        if isinstance(p.get("seconds"), dict) and "median" in p["seconds"]:
            name = f"prefill ms b{p.get('batch')}x{p.get('prompt_len')}"
            m = result(name, ["prefill", i, "seconds", "median"], False, quality=False, scale=1000.0)
            metrics.append(m)
            if "iqr" in p["seconds"]:
                metrics.append(spread("iqr", m, ["prefill", i, "seconds", "iqr"], header=name, scale=1000.0))
    for i, d in enumerate(node.get("decode") or []):
        if isinstance(d.get("ms_per_token"), dict) and "median" in d["ms_per_token"]:
            name = f"decode ms/token b{d.get('batch')} (prompt {d.get('prompt_len')})"
            m = result(name, ["decode", i, "ms_per_token", "median"], False, quality=False)
            metrics.append(m)
            if "iqr" in d["ms_per_token"]:
                metrics.append(spread("iqr", m, ["decode", i, "ms_per_token", "iqr"], header=name))
    facts = {"kernel path": ["kernel_path"]} if node.get("kernel_path") else None
    return section(protocol, version, "latency", metrics, settings=settings, facts=facts)


def _kv_memory(node: dict) -> SectionDeclaration:
    protocol, version, settings = _protocol(node)
    at = f"at {node.get('context')}+{node.get('new_tokens')} tokens"
    metrics: list[MetricDeclaration] = []
    if node.get("kv_bytes_measured"):    # v1 read a zero or missing byte count as no measurement
        metrics.append(result(f"KV MiB {at}", ["kv_bytes_measured"], False, quality=False,
                              header="KV MiB measured", scale=1 / 2**20))
    if "kv_fraction_of_full" in node:
        metrics.append(result(f"KV fraction of full {at}", ["kv_fraction_of_full"], False, quality=False,
                              headline=False, header="KV fraction"))
    return section(protocol, version, "kv", metrics, settings=settings)


def _generic(top: str, node: dict) -> SectionDeclaration:
    """A section v1 knew nothing about: every finite numeric leaf not named as a setting or count
    (NOT_A_RESULT) nor timed (`*_s`); a leaf named with a SPREAD_WORD is a spread; only `value`
    leaves are headline; direction only where the dict stated higher_is_better."""
    metrics: list[MetricDeclaration] = []
    protocol, version, _ = _protocol(node)

    def walk(d: dict, path: tuple, chain: list[dict]) -> None:
        for key, v in d.items():
            p = (*path, str(key))
            if isinstance(v, dict):
                walk(v, p, [*chain, v])
            elif _is_number(v) and key not in NOT_A_RESULT and not str(key).endswith("_s"):
                is_spread = any(w in str(key).lower().split("_") for w in SPREAD_WORDS)
                label = " ".join(x for x in (top, *p) if x != "value")
                metrics.append({"name": label, "path": list(p), "role": "spread" if is_spread else "result",
                                "higher_is_better": None if is_spread else _declared_direction(chain[-1], None),
                                "quality": False, "headline": key == "value" and not is_spread, "header": label,
                                "settings": _protocol(*chain)[2]})

    walk(node, (), [node])
    return section(protocol, version, "other", metrics)


def declarations_of(metrics: dict) -> dict[str, SectionDeclaration]:
    """section name -> the declaration the v1 key conventions imply for that section's values."""
    out = {}
    for top, node in (metrics or {}).items():
        if not isinstance(node, dict):
            continue
        if top in ("ppl", "kv_ppl"):
            out[top] = _ppl(top, node)
        elif top == "zeroshot":
            out[top] = _zeroshot(node)
        elif top == "latency":
            out[top] = _latency(node)
        elif top == "kv_memory":
            out[top] = _kv_memory(node)
        else:
            out[top] = _generic(top, node)
    return out


def upgrade(record: dict) -> dict:
    """The v2 shape of a v1 record: the same record with `metric_declarations` derived here,
    schema_version "2", and `upgraded_from` "1" so readers can tell it was not written as v2."""
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    # a v1 metrics entry that is not a section (a bare value) has nothing to declare; v2 drops it
    kept = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    return {**record, "schema_version": "2", "upgraded_from": "1", "metrics": kept,
            "metric_declarations": declarations_of(kept)}
