"""Print the issue-6 tables (markdown) from the records in results/experiments/issue6."""

from __future__ import annotations

import glob
import json
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "results/experiments/issue6"
records = [json.load(open(f)) for f in sorted(glob.glob(f"{root}/records/*.json"))]
records = [r for r in records if r["status"] == "ok"]


def label(r):
    t = r["target"]["name"] if isinstance(r["target"], dict) else r["target"]
    return f"{r['method']['name']} {t}".replace(" none", "")


print("### Bounded-cache perplexity and KV bytes (WikiText-2 test, 4 x 512-token windows, chunk 32)\n")
print("| weights | kv policy | params | ppl | KV tokens held @512 | KV fraction @512 | KV bytes @528 (gen) | full bytes @528 | fraction |")
print("|---|---|---|---|---|---|---|---|---|")
for r in records:
    k, m = r["metrics"].get("kv_ppl", {}).get("wikitext2"), r["metrics"].get("kv_memory")
    if not k:
        continue
    print(f"| {label(r)} | {r['kv']['name']} | {r['kv'].get('params', {})} | {k['value']:.3f} | {k['kv_tokens_final']} | "
          f"{k['kv_fraction']:.3f} | {m['kv_bytes_measured']:,} | {m['kv_bytes_full_analytic']:,} | {m['kv_fraction_of_full']:.3f} |")

tasks = ["boolq", "rte", "hellaswag_llamacpp", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa",
         "lambada_openai"]
print("\n### Zero-shot (lm-eval, local files, first `limit` docs per task; acc±stderr / acc_norm)\n")
print("| model | " + " | ".join(tasks) + " |")
print("|---|" + "---|" * len(tasks))
for r in records:
    z = r["metrics"].get("zeroshot")
    if not z:
        continue
    cells = []
    for t in tasks:
        e = z["tasks"].get(t, {})
        c = f"{e['acc']:.2f}±{e['acc_stderr']:.2f}" if "acc" in e else "-"
        if "acc_norm" in e:
            c += f" / {e['acc_norm']:.2f}"
        cells.append(c)
    print(f"| {label(r)} (limit {z['limit']}, lm-eval {z['lm_eval_version']}) | " + " | ".join(cells) + " |")

print("\n### Latency (median [IQR] over the timed repeats after warm-up)\n")
print("| model | device / dtype / threads | kernel path | params | prefill (batch x len): ms | decode (batch): ms/token |")
print("|---|---|---|---|---|---|")
for r in records:
    lat = r["metrics"].get("latency")
    if not lat:
        continue
    pre = ", ".join(f"{p['batch']}x{p['prompt_len']}: {p['seconds']['median'] * 1e3:.1f} [{p['seconds']['iqr'] * 1e3:.1f}]"
                    for p in lat["prefill"])
    dec = ", ".join(f"{d['batch']}: {d['ms_per_token']['median']:.1f} [{d['ms_per_token']['iqr']:.1f}]"
                    for d in lat["decode"])
    print(f"| {label(r)} | {lat['device']} / {lat['dtype']} / {lat['threads']} | {lat['kernel_path']} | "
          f"{lat['params']:,} | {pre} | {dec} |")

for path in sorted(glob.glob(f"{root}/benchmarks/*.json")):
    bench = json.load(open(path))
    print(f"\n### {path.split('/')[-1]} (benchmarks/latency_2_4.py; median over repeats)\n")
    print("| variant | kernel path | prefill (batch x len): ms | decode (batch): ms/token |")
    print("|---|---|---|---|")
    for name, lat in bench.items():
        if not isinstance(lat, dict):
            continue
        pre = ", ".join(f"{p['batch']}x{p['prompt_len']}: {p['seconds']['median'] * 1e3:.1f}" for p in lat["prefill"])
        dec = ", ".join(f"{d['batch']}: {d['ms_per_token']['median']:.1f}" for d in lat["decode"])
        print(f"| {name} ({lat['dtype']}, {lat.get('gpu', lat['device'])}) | {lat['kernel_path']} | {pre} | {dec} |")
