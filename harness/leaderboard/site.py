"""Static HTML leaderboard: index (sortable, tag-filterable tables), a page per method, a page per run.

No network at view time: the script and style are inline and every link is relative, so the site works
from file://. Every string that comes from a record or a config goes through html.escape.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from harness.leaderboard.frame import Frames
from harness.leaderboard.tables import TAG_COLUMNS, Table, slug

FILTER_COLUMNS = ("Type", "Criteria", "Budget", "Data", "Retrain", "Weights", "Model", "Target")

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
tr.hidden{display:none} .filters label{margin-right:1em;font-size:13px}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px} .note{color:#666;font-size:13px}
img{max-width:640px;border:1px solid #ddd;margin:4px}
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
    return lambda name: f"{'../' * depth}methods/{slug(name)}.html"


def run_href(depth: int):
    return lambda rid: f"{'../' * depth}runs/{slug(rid)}.html"


def index_page(frames: Frames, overview: Table, pattern_tables: list[Table], status_tables: list[Table],
               plots: list[Path], plot_notes: list[str], problems: list, out_dir: Path) -> str:
    n = len(frames.runs)
    st = frames.runs["status"].value_counts().to_dict() if n else {}
    body = [f'<p>{n} records: {st.get("ok", 0)} ok, {st.get("failed", 0)} failed, {st.get("skipped", 0)} skipped; '
            f'{len(problems)} unreadable record files skipped. <a href="leaderboard.md">Markdown</a> · '
            f'<a href="runs.csv">runs.csv</a> · <a href="cells.csv">cells.csv</a> · '
            f'<a href="tables/">tables (md/csv/tex)</a></p>',
            '<p class="note">Metric columns name their protocol. "% dense" is quality retained against the '
            "dense model of the same model, dtype and protocol (dense/x for perplexity, x/dense for accuracy). "
            "N:M runs of unstructured methods are listed as Semi-structured. Click a header to sort.</p>"]
    if problems:
        body.append("<h2>Skipped record files</h2><ul>" +
                    "".join(f"<li><code>{e(str(p))}</code>: {e(why)}</li>" for p, why in problems) + "</ul>")
    body.append("<h2>All cells</h2>" + _filters(overview.frame) +
                '<p class="note"><span id="shown"></span> cells shown</p>')
    body.append(render_table(overview.frame, "overview", {"Method": method_href(0), "run_ids": run_href(0)}))
    if pattern_tables:
        body.append("<h2>By model and pattern</h2>")
        for i, t in enumerate(pattern_tables):
            body.append(f"<h3>{e(t.title)}</h3>" + render_table(t.frame, f"pattern-{i}", {"Method": method_href(0)}))
    body.append("<h2>Plots</h2>")
    for p in plots:
        if p.suffix == ".png":
            rel = p.relative_to(out_dir).as_posix()
            svg = rel[:-4] + ".svg"
            body.append(f'<a href="{e(svg)}"><img src="{e(rel)}" alt="{e(p.stem)}"></a>')
    for note in plot_notes:
        body.append(f'<p class="note">Not drawn: {e(note)}</p>')
    for t in status_tables:
        body.append(f"<h2>{e(t.title)}</h2>" + render_table(t.frame, t.name, {"run_id": run_href(0),
                                                                               "method": method_href(0)},
                                                             filterable=False))
    return _page("prunebench leaderboard", "\n".join(body))


def _kv_table(items) -> str:
    return "<table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in items) + "</table>"


def method_page(name: str, records: list[dict]) -> str:
    """Paper, tags, version, reference, differences and config of one method (from its records)."""
    versions: dict[str, dict] = {}
    for r in records:
        versions.setdefault(str(r["method"].get("version")), r)
    body = []
    for version, r in versions.items():
        m = r["method"]
        href = _safe_href(m.get("reference", ""))
        ref = f'<a href="{e(href)}">{e(href)}</a>' if href else e(str(m.get("reference", "")))
        body.append(f"<h2>version {e(version)}</h2>")
        body.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in [
            ("paper", e(str(m.get("paper", "")))), ("reference", ref),
            ("fidelity", e(str(m.get("fidelity", "reference")))),
            ("differences", e(str(m.get("differences", "")))),
            ("params", e(json.dumps(m.get("params"), sort_keys=True)))]) + "</table>")
        body.append("<h3>tags</h3>" + _kv_table((m.get("tags") or {}).items()))
        body.append("<h3>config (conf/method)</h3><pre>" + e(json.dumps(r["config"].get("method"), indent=2)) + "</pre>")
    runs = pd.DataFrame([{"run_id": r["run_id"], "status": r["status"], "model": r["model"].get("name"),
                          "target": r["target"].get("name"), "seed": r["config"].get("seed")} for r in records])
    body.append("<h2>runs</h2>" + render_table(runs, "runs", {"run_id": run_href(1)}, filterable=False))
    return _page(f"method {name}", "\n".join(body), depth=1)


def run_page(record: dict, row: dict, metric_columns: list[str]) -> str:
    """One run from its record: summary, metrics, error, and the whole record."""
    summary = [("run_id", record["run_id"]), ("status", record["status"]),
               ("method", f'{record["method"].get("name")} v{record["method"].get("version")}'),
               ("model", record["model"].get("name")), ("target", record["target"].get("name")),
               ("seed", record["config"].get("seed")), ("started", record.get("started_at")),
               ("git", json.dumps(record["env"].get("git"))), ("device", record["env"].get("device")),
               ("dtype", record["env"].get("dtype")), ("threads", record["env"].get("threads"))]
    metrics = [(c, row[c]) for c in metric_columns if c in row and not pd.isna(row[c])]
    body = [f'<p><a href="{e(method_href(1)(record["method"].get("name", "")))}">method page</a></p>',
            _kv_table(summary)]
    if record.get("error"):
        err = record["error"]
        body.append(f"<h2>error at stage {e(str(err.get('stage')))}</h2><pre>{e(str(err.get('type')))}: "
                    f"{e(str(err.get('message')))}\n\n{e(str(err.get('traceback', '')))}</pre>")
    body.append("<h2>metrics</h2>" + _kv_table(metrics))
    body.append("<h2>measured</h2>" + _kv_table((k, v) for k, v in (record.get("measured") or {}).items()
                                               if not isinstance(v, dict)))
    body.append("<h2>record</h2><pre>" + e(json.dumps(record, indent=2)) + "</pre>")
    body.append(f'<p class="note">Reproduce: <code>python -m harness.reproduce '
                f'{e(str(row.get("record_path") or record["run_id"] + ".json"))}</code></p>')
    return _page(f"run {record['run_id']}", "\n".join(body), depth=1)


def write_site(out_dir: Path, frames: Frames, records: list[dict], overview: Table, pattern_tables: list[Table],
               status_tables: list[Table], plots: list[Path], plot_notes: list[str], problems: list) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(index_page(frames, overview, pattern_tables, status_tables, plots, plot_notes, problems,
                                out_dir), encoding="utf-8")
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(str(r["method"].get("name")), []).append(r)
    (out_dir / "methods").mkdir(exist_ok=True)
    for name, rs in by_method.items():
        (out_dir / "methods" / f"{slug(name)}.html").write_text(method_page(name, rs), encoding="utf-8")
    (out_dir / "runs").mkdir(exist_ok=True)
    cols = [c for c in frames.specs]
    rows = {r["run_id"]: r for r in frames.runs.to_dict("records")} if not frames.runs.empty else {}
    for r in records:
        (out_dir / "runs" / f"{slug(r['run_id'])}.html").write_text(run_page(r, rows.get(r["run_id"], {}), cols),
                                                                    encoding="utf-8")
    return index
