"""Do the papers' published conclusions hold on SmolLM2-135M under prunebench's default runs?

Conclusions checked (WikiText-2 perplexity, quick eval, calib=c4_medium, numbers never tuned):
  DSnoT at 60% is at least as good as its Wanda base        (Zhang et al. 2024, Fig. / Table 2)
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
import json
import os
import subprocess
import sys
from pathlib import Path

CELLS = {
    "wanda_60": ["method=wanda", "target=unstructured_60"],
    "dsnot_60": ["method=dsnot", "target=unstructured_60"],
    "magnitude_50": ["method=magnitude", "target=unstructured_50"],
    "wanda_50": ["method=wanda", "target=unstructured_50"],
    "sparsegpt_50": ["method=sparsegpt", "target=unstructured_50"],
    "wanda_2_4": ["method=wanda", "target=nm_2_4"],
    "wanda_4_8": ["method=wanda", "target=nm_4_8"],
}
# name -> (cells, check over {cell: ppl}, statement)
CONCLUSIONS = {
    "dsnot": (("dsnot_60", "wanda_60"), lambda p: p["dsnot_60"] <= p["wanda_60"],
              "DSnoT 60% <= Wanda 60%"),
    "vs_magnitude": (("sparsegpt_50", "wanda_50", "magnitude_50"),
                     lambda p: max(p["sparsegpt_50"], p["wanda_50"]) * 2 < p["magnitude_50"],
                     "SparseGPT 50% and Wanda 50% < magnitude 50% / 2 (far better)"),
    "nm_order": (("wanda_2_4", "wanda_4_8", "wanda_50"),
                 lambda p: p["wanda_2_4"] > p["wanda_4_8"] > p["wanda_50"],
                 "Wanda 2:4 > 4:8 > unstructured 50% (perplexity)"),
}


def run_cell(name: str, results: Path, threads: int, calib: str) -> float:
    cmd = [sys.executable, "-m", "harness.run", *CELLS[name], f"calib={calib}", "eval=quick",
           f"runtime.threads={threads}", f"paths.results_dir={results}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name}: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    rid = next(line.split()[1] for line in out.stdout.splitlines() + out.stderr.splitlines()
               if line.startswith("prunebench: ") and " ok " in line)
    record = json.loads((results / "records" / f"{rid}.json").read_text())
    return float(record["metrics"]["ppl"]["wikitext2"]["value"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=os.environ.get("PRUNEBENCH_RESULTS", "results/conclusions"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", default="c4_medium")
    ap.add_argument("--only", choices=sorted(CONCLUSIONS), action="append")
    args = ap.parse_args()
    results = Path(args.results)
    wanted = args.only or sorted(CONCLUSIONS)
    ppl: dict[str, float] = {}
    for name in dict.fromkeys(c for w in wanted for c in CONCLUSIONS[w][0]):
        ppl[name] = run_cell(name, results, args.threads, args.calib)
        print(f"{name:14s} wikitext2 ppl {ppl[name]:10.3f}", flush=True)
    for w in wanted:
        cells, check, statement = CONCLUSIONS[w]
        figures = ", ".join(f"{c}={ppl[c]:.3f}" for c in cells)
        print(f"{'holds' if check(ppl) else 'DOES NOT HOLD':14s} {statement}: {figures}")


if __name__ == "__main__":
    main()
