"""Print the issue-3 table (markdown) from the records under results/experiments/issue3."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/experiments/issue3") / "records"
rows = []
for f in sorted(root.glob("*.json")):
    r = json.loads(f.read_text())
    ppl = r["metrics"].get("ppl", {}).get("wikitext2", {}).get("value")
    params = r["method"]["params"]
    short = {k: v for k, v in params.items() if k in ("permute", "base", "share_hessians")}
    t = r["prune_report"].get("timing", {})
    rows.append((r["method"]["name"] + (f" {short}" if short else ""), r["target"]["name"],
                 (r.get("allocator") or {}).get("name", "uniform"), r["config"].get("prune", {}).get("propagation"),
                 r["status"], ppl, r["measured"].get("sparsity_blocks"), (r["measured"].get("nm_check") or {}).get("violations"),
                 t.get("forward_s"), t.get("method_s"), r["timing"].get("prune_s"), r["prune_report"].get("reused"),
                 (r.get("error") or {}).get("message", "")[:80]))
rows.sort(key=lambda x: (x[0], x[1], x[2]))
print("| method | target | allocator | propagation | status | wikitext2 ppl | sparsity (blocks) | N:M violations | forward s | method s | prune s | reused |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
fmt = lambda v, d=2: "" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} {r[12]} | {fmt(r[5])} | {fmt(r[6], 4)} | {fmt(r[7])} | {fmt(r[8], 1)} | {fmt(r[9], 1)} | {fmt(r[10], 1)} | {r[11] or ''} |")
