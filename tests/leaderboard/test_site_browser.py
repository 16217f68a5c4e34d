"""The leaderboard page in a real headless Chromium (Debian's binary, driven by playwright):
load from file://, filter by a tag, sort a column, check the rows, take a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed "
                                 "(scripts/install.sh installs it unless PRUNEBENCH_SKIP_APT=1)")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _visible_rows(page, table="#overview"):
    return page.eval_on_selector_all(f"{table} tbody tr:not(.hidden)",
                                     "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))")


def _col(page, name, table="#overview"):
    heads = page.eval_on_selector_all(f"{table} thead th", "hs => hs.map(h => h.textContent.trim())")
    return heads.index(name)


def test_index_filter_sort_screenshot(results_copy, tmp_path):
    from playwright.sync_api import sync_playwright

    from leaderboard.__main__ import build

    b = build(results_copy)
    index = b.out_dir / "index.html"
    shot = results_copy / "leaderboard" / "screenshot.png"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                   args=ARGS, headless=True, offline=True)
        try:
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(index.as_uri())
            rows = _visible_rows(page)
            assert len(rows) == 4  # cells: dense, magnitude 50%, wanda 50% (2 seeds), wanda 2:4
            t_col, m_col = _col(page, "Type"), _col(page, "Method")
            # filter by a tag: Data = Calibration leaves only wanda's cells
            page.select_option("select[data-col=data]", "Calibration")
            rows = _visible_rows(page)
            assert {r[m_col] for r in rows} == {"wanda"} and len(rows) == 2
            page.select_option("select[data-col=data]", "")
            page.select_option("select[data-col=type]", "Semi-structured")
            rows = _visible_rows(page)
            assert [r[m_col] for r in rows] == ["wanda"] and rows[0][t_col] == "Semi-structured"
            page.select_option("select[data-col=type]", "")
            assert len(_visible_rows(page)) == 4
            assert page.text_content("#shown") == "4"
            # sort by perplexity, ascending then descending
            ppl = next(h for h in page.eval_on_selector_all("#overview thead th", "hs => hs.map(h => h.textContent)")
                       if h.startswith("ppl wikitext2") and "% dense" not in h)
            header = page.locator("#overview thead th", has_text=ppl).first
            header.click()
            vals = [float(r[_col(page, ppl)].split(" ")[0]) for r in _visible_rows(page)]
            assert vals == sorted(vals) and len(vals) == 4
            header.click()
            vals = [float(r[_col(page, ppl)].split(" ")[0]) for r in _visible_rows(page)]
            assert vals == sorted(vals, reverse=True)
            assert header.get_attribute("aria-sort") == "descending"
            # a method page and a run page open from the links
            page.click("#overview a[href$='methods/wanda.html']")
            assert page.url.endswith("methods/wanda.html") and "arXiv:2306.11695" in page.content()
            page.go_back()
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            ctx.close()
    assert shot.stat().st_size > 10_000


# where `make demo` wrote (scripts/demo.sh: PRUNEBENCH_DEMO_DIR, default demo-results/)
REPO_RESULTS = Path(__file__).resolve().parents[2] / os.environ.get("PRUNEBENCH_DEMO_DIR", "demo-results")


@pytest.mark.skipif(not list((REPO_RESULTS / "records").glob("*.json")), reason="no demo records (make demo)")
def test_demo_results_page(tmp_path):
    """After `make demo`: the leaderboard of results/ loads, filters by every Type present and sorts."""
    from playwright.sync_api import sync_playwright

    from leaderboard.__main__ import build
    from leaderboard.frame import cells_frame, runs_frame
    from leaderboard.load import load_records

    b = build(REPO_RESULTS, tmp_path / "site")  # into tmp: the test leaves results/ as the demo made it
    loaded = load_records(REPO_RESULTS)
    cells = cells_frame(runs_frame(loaded.records, loaded.paths, loaded.sets))
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                   args=ARGS, headless=True, offline=True)
        try:
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((b.out_dir / "index.html").as_uri())
            assert len(_visible_rows(page)) == len(cells)
            for t, n in cells["group_type"].value_counts().items():
                page.select_option("select[data-col=type]", t)
                rows = _visible_rows(page)
                assert len(rows) == n and {r[_col(page, "Type")] for r in rows} == {t}
            page.select_option("select[data-col=type]", "")
            page.locator("#overview thead th", has_text="Method").first.click()
            methods = [r[_col(page, "Method")] for r in _visible_rows(page)]
            assert methods == sorted(methods, key=str.lower)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            assert not errors, errors
        finally:
            ctx.close()
