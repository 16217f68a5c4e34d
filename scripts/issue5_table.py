"""Issue 5 table: WikiText-2 perplexity before/after each recovery, from the run records.

    python scripts/issue5_table.py results/experiments/issue5
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def rows(results_dir: Path):
    for path in sorted((results_dir / "records").glob("*.json")):
        r = json.loads(path.read_text())
        rec = r.get("recovery") or {}
        params = (r["config"].get("method") or {}).get("params") or {}
        variant = ",".join(f"{k}={v}" for k, v in sorted(params.items())
                           if k in ("metric",) and r["method"]["name"] == "depth")
        extra = []
        rc = r["config"].get("recovery") or {}
        for key in ("module", "loss", "teacher_correction_steps", "autocast", "gradient_checkpointing"):
            if rc.get(key) not in (None, False, 0, "linear", "mse"):
                extra.append(f"{key}={rc[key]}")
        yield {
            "method": r["method"]["name"] + (f"({variant})" if variant else ""),
            "target": r["target"]["name"], "recovery": rec.get("name", "none") + (f" [{', '.join(extra)}]" if extra else ""),
            "status": r["status"], "device": r["env"].get("device"),
            "ppl_wikitext2": (r["metrics"].get("ppl", {}).get("wikitext2") or {}).get("value"),
            "sparsity_blocks": r["measured"].get("sparsity_blocks"),
            "sparsity_before_recovery": rec.get("sparsity_blocks_before"),
            "params_after": r["measured"].get("params_after"),
            "heldout_loss": (f"{rec['heldout_loss_before']:.3f}->{rec['heldout_loss_after']:.3f}"
                             if "heldout_loss_after" in rec else None),
            "train_tokens": (rec.get("budget") or {}).get("train_tokens"),
            "recover_s": r["timing"].get("recover_s"), "run_id": r["run_id"],
        }


def main() -> None:
    results_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "results/experiments/issue5")
    df = pd.DataFrame(rows(results_dir))
    base = df[df.recovery == "none"].set_index(["method", "target"])["ppl_wikitext2"]
    df["ppl_no_recovery"] = [base.get((m, t)) for m, t in zip(df.method, df.target)]
    df["improved"] = df.ppl_wikitext2 < df.ppl_no_recovery
    df = df.sort_values(["target", "method", "recovery"])
    cols = ["method", "target", "recovery", "device", "ppl_no_recovery", "ppl_wikitext2", "improved",
            "sparsity_before_recovery", "sparsity_blocks", "params_after", "heldout_loss", "train_tokens",
            "recover_s", "run_id"]
    print(df[cols].to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
