"""Re-take the README's screenshots (docs/leaderboard.png, docs/method-wanda.png) of the board built
from the committed records, in Debian's headless Chromium (offline, a fresh profile).

    PYTHONPATH=$PWD python scripts/screenshots.py [--results results] [--docs docs]

The board is built into a temporary directory (the generated HTML is not tracked); the index is
shot at 1440x900 (what a laptop shows first), the method page full length.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    from leaderboard.__main__ import build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--docs", default="docs")
    ap.add_argument("--method", default="wanda")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    docs = Path(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        b = build(args.results, Path(tmp) / "site")
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=chromium,
                                                       args=ARGS, headless=True, offline=True,
                                                       viewport={"width": 1440, "height": 900})
            try:
                page = ctx.new_page()
                page.goto((b.out_dir / "index.html").as_uri())
                page.screenshot(path=str(docs / "leaderboard.png"))
                page.goto((b.out_dir / "methods" / f"{args.method}.html").as_uri())
                page.screenshot(path=str(docs / f"method-{args.method}.png"), full_page=True)
            finally:
                ctx.close()
    print(f"screenshots: {docs / 'leaderboard.png'}, {docs / f'method-{args.method}.png'}")


if __name__ == "__main__":
    main()
