"""Print the issue-4 result tables (markdown) from records in results/experiments/issue4."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.records import read_record


def rows(results: Path):
    for path in sorted((results / "records").glob("*.json")):
        r = read_record(path)
        if r["status"] != "ok":
            continue
        p = r["method"]["params"]
        rep = r.get("prune_report") or {}
        lat = rep.get("latency") or {}
        m = r["measured"]
        removed = rep.get("removed") or {}
        if "indices" in removed:
            what = f"{removed['unit']} {removed['indices']}"
        elif removed:
            plan = rep["width_plan"]
            what = f"q/group {plan['q_per_group']}, mlp {plan['intermediate']}, hidden {plan['hidden']}"
        else:
            what = "-"
        variant = p.get("metric") or ",".join(f"{k}={v}" for k, v in p.items() if k != "latency_repeats")
        yield {
            "method": r["method"]["name"], "variant": variant, "target": r["target"]["name"],
            "ppl": r["metrics"]["ppl"]["wikitext2"]["value"],
            "params_before": m["params_before"], "params_after": m["params_after"],
            "removed_frac": 1 - m["params_after"] / m["params_before"],
            "lat_before": lat.get("before", {}).get("median_s"), "lat_after": lat.get("after", {}).get("median_s"),
            "removed": what, "run_id": r["run_id"],
        }


def main(results: str = "results/experiments/issue4") -> None:
    out = sorted(rows(Path(results)), key=lambda d: (d["target"], d["method"], d["variant"]))
    print("| method | variant | target | WikiText-2 ppl (quick) | params before → after | removed | "
          "prefill 1x512 s before → after | removed units | run_id |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for d in out:
        lat = (f"{d['lat_before']:.2f} → {d['lat_after']:.2f}" if d["lat_before"] else "-")
        print(f"| {d['method']} | {d['variant'] or '-'} | {d['target']} | {d['ppl']:.2f} | "
              f"{d['params_before']:,} → {d['params_after']:,} | {100 * d['removed_frac']:.2f}% | {lat} | "
              f"{d['removed']} | {d['run_id']} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
