"""Published conclusions (conf/published/conclusions.yaml) checked on prunebench's own records.

A paper's conclusion ("DSnoT at 60% is at least as good as Wanda") does not depend on the model, so
it can be checked on the model this machine runs. The one place that decides which records count as
a claim's cells and whether the claim holds: the leaderboard's "Published conclusions vs reproduced"
table and `benchmarks/published_conclusions.py` both call `check_claims`.

A record is a cell's when it is ok and what it holds says so: its method and target names, method
parameters, allocator, recovery and KV policy at their defaults, its calibration equal to the
`reproduce.calib` group of conf/calib/ (a data-free method records none: any of its runs counts) and
its metric taken under the `reproduce.eval` group's protocol. Its file name plays no part. Several records of one cell (seeds) give their mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONCLUSIONS_FILE = REPO / "conf" / "published" / "conclusions.yaml"
HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"
OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
SHOWN_OP = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
CALIB_KEYS = ("corpus", "split", "n_samples", "seq_len", "mode")


@dataclass
class Spec:
    model: str                  # the model the benchmark runs
    calib_name: str             # conf/calib/<calib_name>.yaml
    eval_name: str              # conf/eval/<eval_name>.yaml
    calib: dict                 # that group's calibration settings (CALIB_KEYS)
    metric: dict                # evaluator, dataset, protocol, seq_len, max_windows
    cells: dict[str, dict]      # name -> {method, target}
    claims: list[dict]


@dataclass
class Result:
    claim: dict
    model: str
    verdict: str                                        # HOLDS / FAILS / NOT_RUN
    values: dict[str, float] = field(default_factory=dict)      # cell -> mean metric
    run_ids: dict[str, list[str]] = field(default_factory=dict)  # cell -> its records
    missing: list[str] = field(default_factory=list)    # cells without an ok record
    failed: dict[str, list[str]] = field(default_factory=dict)   # cell -> its failed runs (no ok record)


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_conclusions(path: str | Path = CONCLUSIONS_FILE, calib: str | None = None, eval_name: str | None = None,
                     model: str | None = None) -> Spec:
    """The claims file with its calibration and evaluation groups read from conf/ (`calib`, `eval_name`
    and `model` replace the file's choices, as the benchmark's options do)."""
    data = _yaml(Path(path))
    rep = data["reproduce"]
    calib_name, eval_name = calib or rep["calib"], eval_name or rep["eval"]
    calib_group = _yaml(REPO / "conf" / "calib" / f"{calib_name}.yaml")
    metric = dict(rep["metric"])
    section = _yaml(REPO / "conf" / "eval" / f"{eval_name}.yaml")[metric["evaluator"]]
    metric |= {"seq_len": section.get("seq_len"), "max_windows": section.get("max_windows")}
    cells = data["cells"]
    for claim in data["claims"]:
        for c in claim["holds_if"]:
            unknown = {c["left"], c["right"]} - set(cells)
            if unknown or c["op"] not in OPS:
                raise ValueError(f"claim {claim['id']}: unknown cell {sorted(unknown)} or operator {c['op']!r}")
    return Spec(model or rep["model"], calib_name, eval_name, {k: calib_group.get(k) for k in CALIB_KEYS},
                metric, cells, data["claims"])


def claim_cells(claim: dict) -> list[str]:
    """The cells a claim compares, in the order it names them."""
    return list(dict.fromkeys(n for c in claim["holds_if"] for n in (c["left"], c["right"])))


def run_overrides(spec: Spec, cell: str) -> list[str]:
    """The `python -m harness.run` overrides that make one cell's record."""
    c = spec.cells[cell]
    return [f"model={spec.model}", f"method={c['method']}", f"target={c['target']}", f"calib={spec.calib_name}",
            f"eval={spec.eval_name}"]


def _at_defaults(record: dict) -> bool:
    from harness.identity import canonical
    from harness.validate import param_defaults

    config = record.get("config") or {}
    c = canonical(config, param_defaults(config), with_seed=False)["config"]
    allocator, recovery, kv = c.get("allocator") or {}, c.get("recovery") or {}, c.get("kv") or {}
    return (not (c.get("method") or {}).get("params") and allocator.get("name", "uniform") == "uniform"
            and not allocator.get("params") and recovery.get("name", "none") == "none"
            and kv.get("name", "none") == "none" and not c.get("prune"))


def metric_value(record: dict, spec: Spec) -> float | None:
    """The record's value of the claims' metric, when it was taken under the claims' protocol."""
    m = spec.metric
    d = ((record.get("metrics") or {}).get(m["evaluator"]) or {}).get(m["dataset"])
    if not isinstance(d, dict) or d.get("protocol") != m["protocol"]:
        return None
    if d.get("seq_len") != m["seq_len"] or d.get("max_windows") != m["max_windows"]:
        return None
    v = d.get("value")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _eval_matches(record: dict, spec: Spec) -> bool:
    """A failed run has no metric: its config's evaluation section must be the claims' protocol."""
    m = spec.metric
    section = ((record.get("config") or {}).get("eval") or {}).get(m["evaluator"]) or {}
    return (m["dataset"] in (section.get("datasets") or []) and section.get("seq_len") == m["seq_len"]
            and section.get("max_windows") == m["max_windows"])


def cell_of(record: dict, spec: Spec, failed: bool = False) -> str | None:
    """The name of the cell this record is a run of, or None (failed=True: of a failed run, matched
    on its config's evaluation section since it holds no metric)."""
    if record.get("status") != ("failed" if failed else "ok"):
        return None
    method = (record.get("method") or {}).get("name")
    target = (record.get("target") or {}).get("name")
    names = [n for n, c in spec.cells.items() if c["method"] == method and c["target"] == target]
    if not names:
        return None
    calib = record.get("calibration")   # None: a data-free method read no calibration data
    if calib is not None and any(calib.get(k) != v for k, v in spec.calib.items() if v is not None):
        return None
    if (not _eval_matches(record, spec) if failed else metric_value(record, spec) is None) or not _at_defaults(record):
        return None
    return names[0]


def check(claim: dict, values: dict[str, float]) -> tuple[str, list[str]]:
    """(verdict, missing cells) of one claim on {cell: value}."""
    missing = [n for n in claim_cells(claim) if values.get(n) is None]
    if missing:
        return NOT_RUN, missing
    ok = all(OPS[c["op"]](values[c["left"]], float(c.get("factor", 1)) * values[c["right"]])
             for c in claim["holds_if"])
    return (HOLDS if ok else FAILS), []


def relation_text(claim: dict) -> str:
    parts = []
    for c in claim["holds_if"]:
        factor = c.get("factor")
        right = f"{factor:g} × {c['right']}" if factor not in (None, 1) else c["right"]
        parts.append(f"{c['left']} {SHOWN_OP[c['op']]} {right}")
    return " and ".join(parts)


def check_claims(records: list[dict], spec: Spec, models: list[str] | None = None) -> list[Result]:
    """One Result per claim and per model: the models that have a record of any claim cell (or
    `models`), or the spec's own model when none has."""
    found: dict[str, dict[str, list[tuple[float, str]]]] = {}
    failed: dict[str, dict[str, list[str]]] = {}
    for r in records:
        model = str((r.get("model") or {}).get("name"))
        name = cell_of(r, spec)
        if name is not None:
            found.setdefault(model, {}).setdefault(name, []).append((metric_value(r, spec), str(r["run_id"])))
        elif (name := cell_of(r, spec, failed=True)) is not None:
            failed.setdefault(model, {}).setdefault(name, []).append(str(r["run_id"]))
    out = []
    for model in models or sorted(set(found) | set(failed)) or [spec.model]:
        cells = found.get(model, {})
        for claim in spec.claims:
            values, run_ids = {}, {}
            for n in claim_cells(claim):
                if cells.get(n):
                    runs = sorted(cells[n], key=lambda t: t[1])
                    values[n] = sum(v for v, _ in runs) / len(runs)
                    run_ids[n] = [rid for _, rid in runs]
            verdict, missing = check(claim, values)
            fails = {n: sorted(failed[model][n]) for n in missing if n in failed.get(model, {})}
            out.append(Result(claim, model, verdict, values, run_ids, missing, fails))
    return out
