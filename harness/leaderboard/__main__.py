"""`python -m harness.leaderboard --results results [--out results/leaderboard]`

Builds, from every record under <results>/records: leaderboard.md, runs.csv (one row per run),
cells.csv (mean/std over seeds), tables/*.{md,csv,tex}, plots/*.{png,svg} and the static site
(index.html, methods/, runs/). Unreadable records are named and skipped; zero records still build.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Build:
    out_dir: Path
    n_records: int
    problems: list
    files: list[Path] = field(default_factory=list)
    plot_notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def build(results_dir: str | Path, out_dir: str | Path | None = None) -> Build:
    from harness.leaderboard import plots as plots_mod
    from harness.leaderboard import tables as tables_mod
    from harness.leaderboard.frame import cells_frame, runs_frame
    from harness.leaderboard.load import load_records
    from harness.leaderboard.site import write_site

    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir / "leaderboard"
    loaded = load_records(results_dir)
    frames = runs_frame(loaded.records, loaded.paths)
    cells = cells_frame(frames)
    # generated files only: a stale table/plot/page of a removed record must not survive a rebuild
    for sub in ("tables", "plots", "methods", "runs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Build(out_dir, len(loaded.records), loaded.problems)
    result.warnings = list(loaded.warnings)

    frames.runs.to_csv(out_dir / "runs.csv", index=False)
    cells.to_csv(out_dir / "cells.csv", index=False)
    overview = tables_mod.overview(frames, cells)
    pattern_tables = tables_mod.by_pattern(frames, cells)
    status_tables = tables_mod.status(frames)
    for t in [overview, *pattern_tables, *status_tables]:
        result.files += tables_mod.write(t, out_dir / "tables").values()
    plot_files, result.plot_notes = plots_mod.make_plots(frames, out_dir / "plots")
    result.files += plot_files
    md = out_dir / "leaderboard.md"
    md.write_text(tables_mod.leaderboard_markdown(frames, cells, loaded.problems, result.plot_notes), encoding="utf-8")
    index = write_site(out_dir, frames, loaded.records, overview, pattern_tables, status_tables, plot_files,
                       result.plot_notes, loaded.problems)
    result.files += [out_dir / "runs.csv", out_dir / "cells.csv", md, index]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results directory holding records/ (default: results)")
    parser.add_argument("--out", default=None, help="output directory (default: <results>/leaderboard)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    b = build(args.results, args.out)
    for path, why in b.problems:
        print(f"leaderboard: skipped record {path}: {why}", file=sys.stderr)
    for warning in b.warnings:
        print(f"leaderboard: warning: {warning}", file=sys.stderr)
    for note in b.plot_notes:
        print(f"leaderboard: plot not drawn: {note}")
    print(f"leaderboard: {b.n_records} records, {len(b.problems)} skipped -> {b.out_dir / 'index.html'} "
          f"({len(b.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
