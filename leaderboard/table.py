"""`python -m leaderboard.table RESULTS_DIR [--metrics ppl,latency] [--columns ...] [--where key=value]`

One markdown row per record under RESULTS_DIR/records: what ran (method and its parameters, target,
allocator, recovery, KV policy), its status, the measured sparsity and parameter counts, and every
headline metric column of the leaderboard frame (column names carry their protocol). The same
flattening as the leaderboard, so a result set's table and the leaderboard never disagree.
"""

from __future__ import annotations

import argparse
import sys

ID_COLUMNS = ("method", "method_params", "target", "allocator", "recovery", "status")
MEASURED_COLUMNS = ("sparsity_blocks", "bits_per_weight", "params_after")


def table(results_dir: str, metrics: list[str] | None = None, columns: list[str] | None = None,
          where: list[str] | None = None) -> str:
    from leaderboard.frame import runs_frame
    from leaderboard.load import load_records

    loaded = load_records(results_dir)
    frames = runs_frame(loaded.records, loaded.paths)
    df = frames.runs
    if df.empty:
        return f"(no records under {results_dir}/records)"
    df = df.assign(kv=[(r.get("kv") or {}).get("name", "none") for r in loaded.records])
    for condition in where or []:
        key, _, value = condition.partition("=")
        df = df[df[key].astype(str) == value]
    metric_cols = [c for c in frames.metric_columns(headline=not metrics)
                   if not metrics or frames.specs[c].group in metrics or c.split()[0] in metrics]
    keep = [c for c in (*ID_COLUMNS, "kv", *MEASURED_COLUMNS, *(columns or []), *metric_cols, "run_id")
            if c in df.columns and df[c].notna().any()]
    df = df[keep].sort_values([c for c in ("target", "method", "method_params") if c in keep])
    return df.to_markdown(index=False, floatfmt=".4g")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m leaderboard.table", description=__doc__.splitlines()[2])
    ap.add_argument("results_dir")
    ap.add_argument("--metrics", default="", help="comma-separated metric groups (ppl, zeroshot, latency, kv_ppl, ...)")
    ap.add_argument("--columns", default="", help="extra runs-frame columns, comma-separated (e.g. 'timing prune_s')")
    ap.add_argument("--where", action="append", default=[], help="keep rows with column=value (repeatable)")
    args = ap.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]
    print(table(args.results_dir, split(args.metrics), split(args.columns), args.where))


if __name__ == "__main__":
    main(sys.argv[1:])
