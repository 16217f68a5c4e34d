"""Do the papers' published conclusions hold on SmolLM2-135M under prunebench's default runs?

The conclusions, their cells and the check are data and code shared with the leaderboard
(conf/published/conclusions.yaml, harness/conclusions.py), so this benchmark and the page's
"Published conclusions vs reproduced" table cannot disagree. As of writing (WikiText-2 perplexity,
quick eval, calib=c4_medium, numbers never tuned):
  DSnoT at 60% is at least as good as its Wanda base        (Zhang et al. 2024)
  SparseGPT and Wanda are far better than magnitude at 50%  (Frantar & Alistarh 2023; Sun et al. 2024)
  2:4 is worse than 4:8, which is worse than unstructured    (Sun et al. 2024, Table 3)
Each cell is one `python -m harness.run` (an ok record already in the results directory is reused,
so an interrupted check resumes). Prints one line per cell and one per conclusion: holds / does
not hold, with the figures. Where the model disagrees with a paper, that is the finding (the
record is the evidence), not something to tune away.

    PYTHONPATH=$PWD python benchmarks/published_conclusions.py --results /tmp/conclusions --threads 1
    PYTHONPATH=$PWD python benchmarks/published_conclusions.py --only dsnot   # one conclusion
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from harness.conclusions import check_claims, claim_cells, load_conclusions, relation_text, run_overrides
from harness.records import read_record, record_path, records_dir


def run_cell(spec, name: str, results: Path, threads: int) -> dict:
    """Run one cell (reused when its ok record exists) and return its record."""
    cmd = [sys.executable, "-m", "harness.run", *run_overrides(spec, name), f"runtime.threads={threads}",
           f"paths.results_dir={results}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name}: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    rid = next(line.split()[1] for line in out.stdout.splitlines() + out.stderr.splitlines()
               if line.startswith("prunebench: ") and " ok " in line)
    return read_record(record_path(results, rid))


def main() -> None:
    spec = load_conclusions()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=os.environ.get("PRUNEBENCH_RESULTS", "results/conclusions"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", default=spec.calib_name)
    ap.add_argument("--model", default=spec.model, help="a conf/model name (default: the claims file's)")
    ap.add_argument("--only", choices=sorted(c["id"] for c in spec.claims), action="append")
    args = ap.parse_args()
    spec = load_conclusions(calib=args.calib, model=args.model)
    results = Path(args.results)
    spec.claims = [c for c in spec.claims if not args.only or c["id"] in args.only]
    for name in dict.fromkeys(n for c in spec.claims for n in claim_cells(c)):
        record = run_cell(spec, name, results, args.threads)
        value = record["metrics"][spec.metric["evaluator"]][spec.metric["dataset"]]["value"]
        print(f"{name:14s} {spec.metric['dataset']} {spec.metric['evaluator']} {value:10.3f}", flush=True)
    # every record of the results directory, as a leaderboard built from it reads them (other seeds too)
    records = []
    for path in sorted(records_dir(results).glob("*.json")):
        try:
            records.append(read_record(path))
        except (OSError, ValueError):
            continue
    for res in check_claims(records, spec, models=[spec.model]):
        figures = ", ".join(f"{c}={v:.3f}" for c, v in res.values.items())
        print(f"{res.verdict.upper() if res.verdict != 'holds' else res.verdict:14s} {res.claim['claim']} "
              f"[{relation_text(res.claim)}]: {figures}" + (f" (missing: {', '.join(res.missing)})" if res.missing else ""))
        if (note := (res.claim.get("notes") or {}).get(res.model)):
            print(f"{'':14s} note: {note}")


if __name__ == "__main__":
    main()
