"""Published numbers (conf/published/*.yaml) beside prunebench's own, only where they are comparable.

A published entry is matched to a record when model, method, target, allocator and recovery are
the same and the record's metric was taken under the entry's protocol id (`protocol_id` below);
everything else is listed "as reported", with its protocol named, never in a prunebench column.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leaderboard.tables import Table, fmt_value

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "conf" / "published"


def load_published(directory: Path = PUBLISHED_DIR) -> list[dict]:
    import yaml

    out = []
    for path in sorted(Path(directory).glob("*.yaml")):
        for entry in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("entries", []):
            out.append({"allocator": "uniform", "recovery": "none", "approximate": False, **entry,
                        "file": path.name})
    return out


def protocol_ids(record: dict) -> dict[str, float]:
    """{protocol id: value} of the record's metrics that a paper could have reported.
    wikitext2-ppl-<seq_len>: the SparseGPT/Wanda protocol over the *whole* test set (no window cap)."""
    out = {}
    for ds, d in ((record.get("metrics") or {}).get("ppl") or {}).items():
        if (isinstance(d, dict) and d.get("protocol") == "sparsegpt-wanda-ppl" and d.get("max_windows") is None
                and isinstance(d.get("value"), (int, float))):
            out[f"{ds}-ppl-{d.get('seq_len')}"] = float(d["value"])
    return out


def _key(model, method, target, allocator, recovery, protocol):
    return (str(model), str(method), str(target), str(allocator or "uniform"), str(recovery or "none"), str(protocol))


def tables(records: list[dict], entries: list[dict]) -> list[Table]:
    ours: dict[tuple, list[tuple[float, str]]] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        alloc = (r.get("allocator") or {}).get("name") if isinstance(r.get("allocator"), dict) else r.get("allocator")
        for pid, v in protocol_ids(r).items():
            k = _key(r["model"].get("name"), r["method"].get("name"), r["target"].get("name"), alloc,
                     (r.get("recovery") or {}).get("name"), pid)
            ours.setdefault(k, []).append((v, r["run_id"]))
    matched, reported = [], []
    for e in entries:
        cite = f"{e['paper']} {e['table']} (arXiv:{e['arxiv']})" + (" ≈" if e.get("approximate") else "")
        k = _key(e["model"], e["method"], e["target"], e.get("allocator"), e.get("recovery"), e["protocol"])
        base = {"Source": cite, "Model": e["model"], "Method": e["method"], "Target": e["target"],
                "Allocator": e.get("allocator", ""), "Recovery": e.get("recovery", ""), "Protocol": e["protocol"],
                "Metric": e["metric"]}
        if k in ours:
            vals = [v for v, _ in ours[k]]
            mean = sum(vals) / len(vals)
            matched.append({**base, "Paper": fmt_value(float(e["value"])), "prunebench": fmt_value(mean),
                            "prunebench / paper": f"{mean / float(e['value']):.3f}",
                            "run_ids": ",".join(rid for _, rid in ours[k])})
        else:
            reported.append({**base, "As reported": fmt_value(float(e["value"]))})
    note_m = ("Same model, method, target, allocator, recovery and protocol. "
              + ("" if matched else "No prunebench record matches a published (model, protocol) yet: the papers "
                 "report 7B-class models at full-length protocols; their numbers are in the next table."))
    cols_m = ["Source", "Model", "Method", "Target", "Allocator", "Recovery", "Protocol", "Metric", "Paper",
              "prunebench", "prunebench / paper", "run_ids"]
    return [Table("paper_vs_reproduced", "Paper vs reproduced", pd.DataFrame(matched, columns=cols_m), note_m),
            Table("as_reported", "As reported (no prunebench run of this model and protocol)",
                  pd.DataFrame(reported), "≈: quoted from secondary sources (conventions.md); treat as approximate.")]


def _model_shown(records: list[dict], model: str) -> str:
    """'smollm2-135m (SmolLM2-135M-Instruct.Q4_1.gguf)': the name and, when recorded, the weights file."""
    for r in records:
        m = r.get("model") or {}
        if m.get("name") == model and (m.get("source") or {}).get("file"):
            return f"{model} ({m['source']['file']})"
    return model


def _paper_figures(claim: dict) -> str:
    parts = []
    for f in claim["paper"].get("figures") or []:
        approx = set(f.get("approximate") or [])
        vals = ", ".join(f"{c} {v:g}{' (p)' if c in approx else ''}" for c, v in f["values"].items())
        parts.append(f"{f['model']} ({f['protocol']}): {vals}")
    return "; ".join(parts) or "none quoted in conventions.md"


def _why_not_run(res) -> str:
    """'dsnot_60 failed (1 run); no record of wanda_60'."""
    parts = [f"{c} failed ({len(ids)} run{'s' if len(ids) > 1 else ''})" for c, ids in res.failed.items()]
    absent = [c for c in res.missing if c not in res.failed]
    return "; ".join(parts + ([f"no record of {', '.join(absent)}"] if absent else []))


def conclusions_table(records: list[dict], spec=None) -> Table:
    """Each published conclusion, the paper's model and figures, and whether it holds on the records
    loaded (harness.conclusions decides; benchmarks/published_conclusions.py uses the same check)."""
    from harness.conclusions import NOT_RUN, check_claims, load_conclusions, relation_text

    spec = spec or load_conclusions()
    rows = []
    for res in check_claims(records, spec):
        p = res.claim["paper"]
        rows.append({
            "Claim": res.claim["claim"],
            "Paper": f"{p['name']} ({p['authors']}){', ' + p['where'] if p.get('where') else ''}, arXiv:{p['arxiv']}",
            "Paper's model": p["model"], "Paper's figures": _paper_figures(res.claim),
            "Checked": relation_text(res.claim),
            "Reproduced on": _model_shown(records, res.model),
            "Reproduced figures": ", ".join(f"{c} {v:.3f}" + (f" (mean of {len(res.run_ids[c])})"
                                                                   if len(res.run_ids[c]) > 1 else "")
                                            for c, v in res.values.items()),
            "Verdict": res.verdict + (f" ({_why_not_run(res)})" if res.verdict == NOT_RUN else ""),
            "Note": (res.claim.get("notes") or {}).get(res.model, ""),
            "run_ids": ",".join([rid for ids in res.run_ids.values() for rid in ids] +
                                [rid for ids in res.failed.values() for rid in ids]),
        })
    models = sorted({r["Reproduced on"] for r in rows})
    m = spec.metric
    note = (f"The reproduced side is on {', '.join(models)}, not on the papers' models: the claim is checked "
            f"on this model, the numbers are not comparable with the paper's. Metric: {m['evaluator']} "
            f"{m['dataset']} ({m['protocol']}, seq {m['seq_len']}, {m['max_windows'] or 'all'} windows; lower is "
            f"better), calibration {spec.calib_name} ({spec.calib['corpus']} {spec.calib['n_samples']}×"
            f"{spec.calib['seq_len']}). A cell is matched on the record's method, target, calibration and "
            "evaluation protocol at default parameters (not on its file name); several runs of a cell (seeds, thread "
            "counts) give their mean. "
            "(p): quoted in conventions.md from secondary sources. Claims: conf/published/conclusions.yaml.")
    return Table("published_conclusions", "Published conclusions vs reproduced", pd.DataFrame(rows), note)
