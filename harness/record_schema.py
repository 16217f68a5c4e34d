"""The run record, section by section (schema version 2), and the metric contract evaluators follow.

A record is one JSON object at <results_dir>/records/<run_id>.json (harness.records writes it).
The TypedDicts below document its sections the way lm-eval's `result_schema.py` documents its
output; `check_record` (called by harness.records.validate_record) checks the parts readers rely on.

The metric contract. `metrics[<section>]` holds what an evaluator measured, in the evaluator's own
layout (perplexity per dataset, zero-shot per task, latency per setting, ...); W&B logging,
reproduction checks and scripts read those values by key. Next to it, `metric_declarations[<section>]`
says what the values *are*: the protocol (name, version, the settings that make two numbers
comparable) and, per metric, where its value sits, whether higher is better, and whether it is a
result or the spread of another result. The leaderboard reads the declarations and nothing else to
decide which numbers are results, which way they rank and which protocol a column holds.

Version 1 records have no declarations; harness.records_v1 derives them once, when such a record is
read (harness.records.upgrade_record).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Number
from typing import Any, Literal, TypedDict

ROLES = ("result", "spread")


class MetricDeclaration(TypedDict, total=False):
    """One number of an evaluator section.

    name            what the number is, without its protocol: "ppl wikitext2", "boolq acc",
                    "prefill ms b1x128"; for a spread, the kind of spread ("stderr", "iqr")
    path            keys (and list indices) from metrics[<section>] to the stored value
    scale           stored value x scale = the value in the unit `name` states (seconds -> ms: 1000)
    role            "result": a measurement that ranks runs; "spread": the uncertainty or spread of
                    the result named in `spread_of` (never ranked on its own)
    higher_is_better  for a result: True (accuracy) or False (perplexity, latency); None for a spread,
                    and for a result of a v1 section whose direction v1 never knew (harness.records_v1)
    spread_of       role "spread": the `name` of the result it belongs to (same section); absent only
                    in v1 sections harness.records_v1 did not know
    quality         a model-quality number (perplexity, accuracy): compared with the dense model as
                    "% of dense"; cost numbers (latency, memory) are not
    headline        shown in the leaderboard's tables (every declared number is in its CSV files)
    header          the short column header inside a table of its section ("boolq acc", "wikitext2")
    settings        protocol settings of this number alone, added after the section's (perplexity:
                    each dataset's seq_len and window count)
    """

    name: str
    path: list
    scale: float
    role: Literal["result", "spread"]
    higher_is_better: bool | None
    spread_of: str | None
    quality: bool
    headline: bool
    header: str
    settings: dict[str, Any]


class MeanDeclaration(TypedDict):
    """A mean over results of one section, computed by the reader over those present and finite
    (the zero-shot mean accuracy over tasks): `of` lists the results' names, `over` says what one
    of them is ("tasks": the column reads "zero-shot mean acc (9 tasks, ...)")."""

    name: str
    header: str
    of: list[str]
    over: str
    higher_is_better: bool
    quality: bool


class SectionDeclaration(TypedDict, total=False):
    """What one evaluator section of `metrics` holds.

    protocol, protocol_version  the measurement procedure; numbers of different protocols, versions
                    or settings never share a leaderboard column
    settings        the settings that make two numbers of this protocol comparable (sequence length,
                    shots, sample limit, device, dtype, threads ...), in the order they are quoted
    group           the family of numbers the section belongs to; a family shares leaderboard tables
                    (ppl, kv_ppl, zeroshot, latency, kv)
    metrics         the declared numbers (results and their spreads); an undeclared value (token
                    counts, sums, timings of the evaluation itself, hashes) is provenance, not a result
    means           means over declared results (MeanDeclaration)
    facts           text shown beside the numbers: label -> path to a string ("kernel path")
    """

    protocol: str
    protocol_version: str
    settings: dict[str, Any]
    group: str
    metrics: list[MetricDeclaration]
    means: list[MeanDeclaration]
    facts: dict[str, list]


class ErrorSection(TypedDict):
    """A failed run's error: the stage it failed in, the exception type, message and traceback."""

    stage: str
    type: str
    message: str
    traceback: str


class Record(TypedDict, total=False):
    """A run record. Required keys (harness.records.REQUIRED_KEYS) are marked *.

    schema_version*   "2" (this layout); version-1 records are upgraded when read
    run_id*           hash of the semantic config and data (harness.identity)
    identity_version  version of that hash's canonical form
    pruning_id        identity of the pruned model alone (records that differ only in `eval` share it)
    status*           "ok" | "failed"
    error             ErrorSection, or None
    method*, model*, target*  what was pruned, how, and to which target (as the run described them)
    allocator, kv, recovery, calibration  the run's other stages as they ran
    measured          sparsity and parameter counts measured on the pruned model (a quantised model:
                      bits_per_weight and `quant`, harness.quant.measure_bits)
    metrics           evaluator section name -> the evaluator's values (see the module docstring)
    metric_declarations  evaluator section name -> SectionDeclaration
    timing, memory    seconds per stage, peak memory
    prune_report      what the method reported (removed blocks, per-layer sparsity, ...)
    env*              device, dtype, threads, library versions, git state, lock file hash
    provenance        sha256 of the model, tokenizer and data files read
    config*           the resolved config (paths written relative to their roots)
    tags              the run's taxonomy tags (type, criteria, budget, data, retrain, weights)
    evaluated_from    harness.evaluate: the source run's id and saved model folder
    output            the saved model, when output.save_model was set
    started_at, finished_at  UTC timestamps
    """

    schema_version: str
    run_id: str
    identity_version: str
    pruning_id: str
    status: Literal["ok", "failed"]
    error: ErrorSection | None
    method: dict
    model: dict
    target: dict
    allocator: dict | str | None
    kv: dict
    recovery: dict
    calibration: dict | None
    measured: dict
    metrics: dict[str, dict]
    metric_declarations: dict[str, SectionDeclaration]
    timing: dict[str, float]
    memory: dict[str, float]
    prune_report: dict
    env: dict
    provenance: dict
    config: dict
    tags: dict
    evaluated_from: dict
    output: dict
    started_at: str
    finished_at: str


@dataclass(frozen=True)
class Evaluated:
    """What an evaluator returns: its section name, the values it measured and their declaration.
    The runner stores `values` at record["metrics"][section] and `declaration` at
    record["metric_declarations"][section]."""

    section: str
    values: dict
    declaration: SectionDeclaration


def result(name: str, path: list, higher_is_better: bool, *, quality: bool, headline: bool = True,
           header: str | None = None, scale: float = 1.0, settings: dict | None = None) -> MetricDeclaration:
    """A ranked number."""
    d: MetricDeclaration = {"name": name, "path": list(path), "role": "result", "higher_is_better": higher_is_better,
                            "quality": quality, "headline": headline, "header": header or name}
    if scale != 1.0:
        d["scale"] = scale
    if settings:
        d["settings"] = dict(settings)
    return d


def spread(name: str, of: MetricDeclaration, path: list, *, header: str | None = None,
           scale: float = 1.0) -> MetricDeclaration:
    """The spread (stderr, iqr, ...) of the result `of`; shares its settings, never ranked."""
    d: MetricDeclaration = {"name": name, "path": list(path), "role": "spread", "higher_is_better": None,
                            "spread_of": of["name"], "quality": False, "headline": False,
                            "header": header or f"{of['header']} {name}"}
    if scale != 1.0:
        d["scale"] = scale
    if of.get("settings"):
        d["settings"] = dict(of["settings"])
    return d


def section(protocol: str, protocol_version: str | None, group: str, metrics: list[MetricDeclaration], *,
            settings: dict | None = None, means: list[MeanDeclaration] | None = None,
            facts: dict[str, list] | None = None) -> SectionDeclaration:
    version = "" if protocol_version is None else str(protocol_version)
    d: SectionDeclaration = {"protocol": protocol, "protocol_version": version,
                             "settings": dict(settings or {}), "group": group, "metrics": metrics}
    if means:
        d["means"] = means
    if facts:
        d["facts"] = facts
    return d


_MISSING = object()


def lookup(values: Any, path: list) -> Any:
    """The value at `path` (dict keys and list indices) inside `values`; _MISSING when absent."""
    node = values
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return _MISSING
    return node


def declared_value(values: dict, metric: MetricDeclaration) -> float | None:
    """The declared number in its named unit, or None when it is absent, not a number or not finite
    (a value the loader flagged as impossible is None)."""
    v = lookup(values, metric["path"])
    if isinstance(v, bool) or not isinstance(v, Number) or not math.isfinite(float(v)):
        return None
    return float(v) * float(metric.get("scale", 1.0))


def check_declarations(metrics: dict, declarations: Any) -> None:
    """Every metrics section is declared, and every declaration is well formed and points at a value
    of its section. Raises ValueError naming the section and metric."""
    if not isinstance(declarations, dict):
        raise ValueError("record lacks metric_declarations (an object: section -> declaration)")
    for name in metrics or {}:
        if name not in declarations:
            raise ValueError(f"metrics section {name!r} has no declaration in metric_declarations")
    for name, decl in declarations.items():
        if name not in (metrics or {}):
            raise ValueError(f"metric_declarations.{name} declares a section that metrics lacks")
        for key in ("protocol", "protocol_version", "group", "metrics"):
            if key not in decl:
                raise ValueError(f"metric_declarations.{name} lacks {key!r}")
        names = set()
        for m in decl["metrics"]:
            where = f"metric_declarations.{name} metric {m.get('name')!r}"
            if m.get("role") not in ROLES:
                raise ValueError(f"{where}: role must be one of {ROLES}, got {m.get('role')!r}")
            hib = m.get("higher_is_better")
            if m["role"] == "result" and not (hib is None or isinstance(hib, bool)):
                raise ValueError(f"{where}: higher_is_better must be true, false or null, got {hib!r}")
            if m["role"] == "spread" and hib is not None:
                raise ValueError(f"{where}: a spread is not ranked (higher_is_better must be null)")
            if lookup(metrics[name], m.get("path") or []) is _MISSING:
                raise ValueError(f"{where}: path {m.get('path')} is not in metrics.{name}")
            if m["role"] == "result":
                names.add(m["name"])
        for m in decl["metrics"]:
            if m["role"] == "spread" and m.get("spread_of") is not None and m["spread_of"] not in names:
                raise ValueError(f"metric_declarations.{name}: spread {m['name']!r} belongs to "
                                 f"{m.get('spread_of')!r}, which is not a declared result")
        for mean in decl.get("means") or []:
            unknown = [n for n in mean["of"] if n not in names]
            if unknown:
                raise ValueError(f"metric_declarations.{name}: mean {mean['name']!r} is over undeclared {unknown}")
