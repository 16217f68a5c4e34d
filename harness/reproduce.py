"""`python -m harness.reproduce <record.json> [--results-dir DIR] [--rtol R]`

Rebuilds the run from the record alone (its `config`), re-runs it (forced, into a fresh results
directory), and compares every number and sha256 of `metrics`, `measured`, `calibration` and
`provenance` (model, tokenizer, data and calibration-token hashes): exactly on CPU, within a relative tolerance on GPU (default 1e-3: CUDA kernels are not bitwise
deterministic across runs, cards or driver versions). Wall-clock figures (`*_s`, `*_ms`,
`tokens_per_s`, latency) are shown but not compared. Prints a diff table, warns when the code (git
sha) or library versions differ from the record's, and exits 0 when it reproduces, 1 when not,
2 when the record cannot be read or the config no longer composes.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path

GPU_RTOL = 1e-3
COMPARED_SECTIONS = ("metrics", "measured", "calibration", "provenance")
# Keys that are records of where or how long, not results (paths differ between machines).
NOT_COMPARED = {"data_source", "source", "record_path"}


@dataclass
class Row:
    key: str
    recorded: object
    reproduced: object
    compared: bool
    ok: bool
    abs_diff: float | None = None
    rel_diff: float | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rtol: float = 0.0
    status: tuple[str, str] = ("", "")
    new_record: dict | None = None

    @property
    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if r.compared and not r.ok]

    @property
    def reproduced(self) -> bool:
        return not self.mismatches and self.status[0] == self.status[1]


def is_timing(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return (leaf.endswith(("_s", "_ms")) or "tokens_per_s" in leaf or key.split(".")[1:2] == ["latency"]
            or ".latency." in key)


def leaves(tree, prefix: str = "") -> dict[str, object]:
    """Scalar leaves as {'metrics.ppl.wikitext2.value': x}; lists are indexed."""
    out: dict[str, object] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(leaves(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = tree
    return out


def _number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def compare(old: dict, new: dict, rtol: float) -> list[Row]:
    a = {k: v for s in COMPARED_SECTIONS for k, v in leaves(old.get(s) or {}, s).items()}
    b = {k: v for s in COMPARED_SECTIONS for k, v in leaves(new.get(s) or {}, s).items()}
    rows = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        leaf = key.rsplit(".", 1)[-1]
        if leaf in NOT_COMPARED or (not _number(x) and not _number(y) and "sha256" not in key
                                    and key in a and key in b):
            continue  # descriptive strings (dataset names, splits) are part of the config, not results
        if key not in a or key not in b:
            rows.append(Row(key, x, y, True, False))
            continue
        if is_timing(key):
            rows.append(Row(key, x, y, False, True))
            continue
        if _number(x) and _number(y):
            d = abs(float(x) - float(y))
            rel = d / abs(float(x)) if float(x) else (0.0 if d == 0 else math.inf)
            ok = (x == y) if rtol == 0 else math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=0.0)
            rows.append(Row(key, x, y, True, ok, d, rel))
        else:
            rows.append(Row(key, x, y, True, x == y))
    return rows


def _env_warnings(old: dict, new: dict) -> list[str]:
    out = []
    og, ng = (old.get("env") or {}).get("git") or {}, (new.get("env") or {}).get("git") or {}
    if og.get("sha") != ng.get("sha"):
        out.append(f"code differs: record at git {og.get('sha')}, now {ng.get('sha')}")
    if ng.get("dirty"):
        out.append("the working tree has uncommitted changes")
    ol, nl = (old.get("env") or {}).get("libraries") or {}, (new.get("env") or {}).get("libraries") or {}
    for lib in sorted(set(ol) | set(nl)):
        if ol.get(lib) != nl.get(lib):
            out.append(f"library {lib}: record {ol.get(lib)}, now {nl.get(lib)}")
    for k in ("device", "threads", "dtype", "gpu"):
        if (old.get("env") or {}).get(k) != (new.get("env") or {}).get(k):
            out.append(f"{k}: record {(old.get('env') or {}).get(k)}, now {(new.get('env') or {}).get(k)}")
    return out


def rebuild_config(record: dict, results_dir: Path, wandb: bool = False) -> dict:
    """The record's config, forced, writing into `results_dir`. Machine paths that do not exist
    here fall back to auto-resolution (data dir, cache dir)."""
    config = copy.deepcopy(record["config"])
    paths = dict(config.get("paths") or {})
    for key in ("data_dir", "cache_dir"):
        if paths.get(key) and not Path(str(paths[key])).expanduser().exists():
            paths[key] = None
    paths["results_dir"] = str(results_dir)
    config["paths"] = paths
    config["force"] = True
    # The re-run checks the caches too: calibration tokens and block inputs are recomputed, not read
    # from the cache the original run wrote (the model's float copy is verified by its digest).
    config["prune"] = {**(config.get("prune") or {}), "reuse": False}
    section = dict(config.get("wandb") or {})
    section.update({"dir": str(results_dir), "mode": section.get("mode", "offline") if wandb else "disabled"})
    config["wandb"] = section
    return config


def reproduce(record_path: str | Path, results_dir: str | Path | None = None, rtol: float | None = None,
              wandb: bool = False) -> Report:
    from harness.records import read_record, run_id_for
    from harness.run import run_experiment

    record = read_record(record_path)
    with tempfile.TemporaryDirectory(prefix="prunebench-reproduce-") as tmp:
        out = Path(results_dir) if results_dir else Path(tmp)
        own = Path(record_path).resolve().parent.parent
        if out.resolve() == own:
            # never over the record being checked: the re-run goes to a subfolder
            out = out / "reproduced" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        config = rebuild_config(record, out, wandb)
        report = Report()
        if run_id_for(config) != record["run_id"]:
            report.warnings.append(f"the record's config hashes to {run_id_for(config)}, not its run_id "
                                   f"{record['run_id']}: the record was edited or the id scheme changed")
        new = run_experiment(config)
    device = str((new.get("env") or {}).get("device") or "cpu")
    report.rtol = rtol if rtol is not None else (GPU_RTOL if device.startswith("cuda") else 0.0)
    report.rows = compare(record, new, report.rtol)
    report.warnings += _env_warnings(record, new)
    report.status = (record["status"], new["status"])
    report.new_record = new
    return report


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    return s if len(s) <= 24 else s[:10] + "…" + s[-10:]


def format_report(report: Report, show_all: bool = False) -> str:
    import pandas as pd

    rows = [r for r in report.rows if show_all or not r.ok or (r.compared and r.key.endswith(("value", "acc",
                                                                                               "acc_norm")))]
    table = pd.DataFrame([{"key": r.key, "recorded": _fmt(r.recorded), "reproduced": _fmt(r.reproduced),
                           "abs diff": "" if r.abs_diff is None else f"{r.abs_diff:.3g}",
                           "rel diff": "" if r.rel_diff is None else f"{r.rel_diff:.3g}",
                           "result": ("match" if r.ok else "MISMATCH") if r.compared else "not compared (timing)"}
                          for r in rows])
    n_cmp = sum(r.compared for r in report.rows)
    lines = [table.to_string(index=False) if not table.empty else "(nothing to show)", ""]
    lines += [f"WARNING: {w}" for w in report.warnings]
    tol = "exact (bit for bit)" if report.rtol == 0 else f"relative tolerance {report.rtol:g}"
    lines.append(f"status: recorded {report.status[0]}, reproduced {report.status[1]}")
    lines.append(f"{n_cmp} values compared, {tol}: {len(report.mismatches)} mismatches -> "
                 + ("REPRODUCED" if report.reproduced else "NOT REPRODUCED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("record", help="a record JSON file")
    parser.add_argument("--results-dir", default=None, help="where the re-run writes (default: a temp dir)")
    parser.add_argument("--rtol", type=float, default=None,
                        help=f"relative tolerance (default: 0 on CPU, {GPU_RTOL:g} on GPU)")
    parser.add_argument("--all", action="store_true", help="show every compared value, not only mismatches "
                                                          "and headline metrics")
    parser.add_argument("--wandb", action="store_true", help="log the re-run to W&B as well")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = reproduce(args.record, args.results_dir, args.rtol, args.wandb)
    except (OSError, ValueError, KeyError) as exc:
        print(f"reproduce: cannot rebuild the run from {args.record}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, args.all))
    return 0 if report.reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
