"""`python -m harness.reproduce <record.json> [--results-dir DIR] [--rtol R]`

Rebuilds the run from the record alone (its `config`), re-runs it (forced, into a fresh results
directory), and compares every number and sha256 of `metrics`, `measured`, `calibration` and
`provenance` (model, tokenizer, data and calibration-token hashes). The verdict is one of

  bit-exact           every compared value identical;
  within tolerance    every number within its documented tolerance (TOLERANCES: relative 1e-4 for
                      perplexity, NLL sums, accuracies and measured sparsity on CPU; GPU_RTOL = 1e-3 for
                      every number on a GPU, whose kernels are not bitwise deterministic across runs,
                      cards or drivers; --rtol overrides), every hash identical;
  not reproduced      anything else;

and names the environment differences that can explain a non-bit-exact result (lock file hash,
library versions, code version, device, threads, dtype). Wall-clock figures (`*_s`, `*_ms`,
`tokens_per_s`, latency) are shown but not compared. The verdict is saved beside the record
(<set>/reproductions/<run_id>.json, shown on the run's leaderboard page). Exit 0 for bit-exact or
within tolerance, 1 for not reproduced, 2 when the record cannot be read or the config no longer composes.
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
# Relative tolerance on CPU per compared key (first matching suffix wins); hashes and strings are exact.
TOLERANCES: tuple[tuple[str, float], ...] = (
    (".value", 1e-4), (".nll_sum", 1e-4), (".acc", 1e-4), (".acc_norm", 1e-4), ("_stderr", 1e-4),
    ("sparsity_blocks", 1e-4), ("sparsity_total", 1e-4), ("sparsity", 1e-4),
)
DEFAULT_CPU_RTOL = 1e-4
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
    rtol: float | None = None       # one tolerance for every number (GPU or --rtol); None: TOLERANCES
    status: tuple[str, str] = ("", "")
    new_record: dict | None = None

    @property
    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if r.compared and not r.ok]

    @property
    def bit_exact(self) -> bool:
        return self.status[0] == self.status[1] and all(r.recorded == r.reproduced for r in self.rows if r.compared)

    @property
    def reproduced(self) -> bool:
        return not self.mismatches and self.status[0] == self.status[1]

    @property
    def verdict(self) -> str:
        return "bit-exact" if self.bit_exact else "within tolerance" if self.reproduced else "not reproduced"


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


def tolerance(key: str, rtol: float | None) -> float:
    if rtol is not None:
        return rtol
    return next((t for suffix, t in TOLERANCES if key.endswith(suffix) or suffix.strip(".") in key.rsplit(".", 1)[-1]),
                DEFAULT_CPU_RTOL)


def compare(old: dict, new: dict, rtol: float | None) -> list[Row]:
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
            tol = tolerance(key, rtol)
            ok = (x == y) if tol == 0 else math.isclose(float(x), float(y), rel_tol=tol, abs_tol=0.0)
            rows.append(Row(key, x, y, True, ok, d, rel))
        else:
            rows.append(Row(key, x, y, True, x == y))
    return rows


def _env_warnings(old: dict, new: dict) -> list[str]:
    out = []
    olock, nlock = ((old.get("env") or {}).get("lock") or {}).get("sha256"), ((new.get("env") or {}).get("lock") or {}).get("sha256")
    if olock != nlock:
        out.append(f"environment lock: record {olock or 'none (recorded before the lock file)'}, now {nlock}")
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
    """The record's config, forced, writing into `results_dir`. Root names and machine paths that
    do not exist here fall back to auto-resolution (data dir, cache dir, checkpoint dir)."""
    config = copy.deepcopy(record["config"])
    paths = dict(config.get("paths") or {})
    for key in ("data_dir", "cache_dir", "checkpoint_dir"):
        # a record stores root names (`<data_dir>`), not machine paths: resolve them here
        value = str(paths.get(key) or "")
        if value and (value.startswith("<") or not Path(value).expanduser().exists()):
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
    report.rtol = rtol if rtol is not None else (GPU_RTOL if device.startswith("cuda") else None)
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
    tol = ("per-metric tolerances (harness.reproduce.TOLERANCES)" if report.rtol is None else
           "exact (bit for bit)" if report.rtol == 0 else f"relative tolerance {report.rtol:g}")
    lines.append(f"status: recorded {report.status[0]}, reproduced {report.status[1]}")
    lines.append(f"{n_cmp} values compared, {tol}: {len(report.mismatches)} mismatches -> "
                 + ("REPRODUCED" if report.reproduced else "NOT REPRODUCED"))
    lines.append(f"verdict: {report.verdict.upper()}"
                 + ("" if report.bit_exact or not report.warnings else
                    f" (environment differences that can explain it: {'; '.join(report.warnings)})"))
    return "\n".join(lines)


def check_summary(report: Report) -> dict:
    """What the leaderboard's run page shows (no dates: the board stays byte-identical)."""
    worst = max((r.rel_diff for r in report.rows if r.compared and r.rel_diff is not None), default=0.0)
    new_env = (report.new_record or {}).get("env") or {}
    return {"verdict": report.verdict, "mismatches": len(report.mismatches),
            "max relative difference": f"{worst:.3g}", "environment differences": "; ".join(report.warnings) or "none",
            "reproduced with lock": ((new_env.get("lock") or {}).get("sha256") or "none"),
            "reproduced at git": ((new_env.get("git") or {}).get("sha") or "none")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("record", help="a record JSON file")
    parser.add_argument("--results-dir", default=None, help="where the re-run writes (default: a temp dir)")
    parser.add_argument("--rtol", type=float, default=None,
                        help=f"one relative tolerance for every number (default: TOLERANCES on CPU, "
                             f"{GPU_RTOL:g} on GPU; 0 = bit for bit)")
    parser.add_argument("--all", action="store_true", help="show every compared value, not only mismatches "
                                                          "and headline metrics")
    parser.add_argument("--wandb", action="store_true", help="log the re-run to W&B as well")
    parser.add_argument("--no-save", action="store_true", help="do not save the verdict beside the record")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = reproduce(args.record, args.results_dir, args.rtol, args.wandb)
    except (OSError, ValueError, KeyError) as exc:
        print(f"reproduce: cannot rebuild the run from {args.record}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, args.all))
    if not args.no_save:
        import json

        from harness.files import write_atomic

        path = Path(args.record).resolve().parent.parent / "reproductions" / f"{Path(args.record).stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(check_summary(report), indent=1, sort_keys=True) + "\n")
        print(f"saved the verdict to {path}")
    return 0 if report.reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
