"""`python -m leaderboard --results results [--out results/leaderboard]`

Builds, from every record under <results> (its records/ and every named result set below it):
leaderboard.md, runs.csv (one row per run), cells.csv (one row per cell), tables/*.{md,csv,tex},
plots/*.{png,svg} and the static site (index.html, methods/, runs/). Unreadable records are named and
skipped; zero records still build. The same records give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
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
    n_cells: int = 0
    warnings: list[str] = field(default_factory=list)   # coerced fields, impossible values (named)


def _list_tags() -> list[dict] | None:
    from harness.data import resolve_data_dir

    d = resolve_data_dir(None)
    path = Path(d) / "awesome-llms-pruning" / "tags.json" if d else None
    return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None


def _checks(results_dir: Path) -> dict:
    """The last reproduction check per run id (<results>/**/reproductions/<run_id>.json), if any."""
    out = {}
    for p in sorted(results_dir.rglob("reproductions/*.json")):
        try:
            out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return out


def build(results_dir: str | Path, out_dir: str | Path | None = None, conclusions=None) -> Build:
    """`conclusions`: the published-conclusions spec (harness.conclusions.load_conclusions(); default: the file's)."""
    from harness.env import lock_state
    from leaderboard import plots as plots_mod
    from leaderboard import published
    from leaderboard import tables as T
    from leaderboard.frame import cells_frame, runs_frame
    from leaderboard.load import load_records, stale_method_versions
    from leaderboard.site import write_site

    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir / "leaderboard"
    loaded = load_records(results_dir)
    # paths as a reader types them (no absolute machine path in a page): <results name>/<set>/records/<id>.json
    rel = [Path(results_dir.name) / p.relative_to(results_dir) for p in loaded.paths]
    frames = runs_frame(loaded.records, rel, loaded.sets)
    cells = cells_frame(frames)
    # generated files only: a stale table/plot/page of a removed record must not survive a rebuild
    for sub in ("tables", "plots", "methods", "runs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Build(out_dir, len(loaded.records), loaded.problems, n_cells=len(cells))
    result.warnings = list(loaded.warnings) + stale_method_versions(loaded.records, loaded.sets)

    frames.runs.drop(columns=["config_flat"], errors="ignore").to_csv(out_dir / "runs.csv", index=False,
                                                                      lineterminator="\n")
    cells.to_csv(out_dir / "cells.csv", index=False, lineterminator="\n")
    sections = {"overview": [T.overview(frames, cells)], "coverage": T.coverage(frames, cells, _list_tags()),
                "pattern": T.by_pattern(frames, cells), "zeroshot": T.zeroshot(frames, cells),
                "latency": T.latency(frames, cells), "kv": T.kv(frames, cells),
                "published": [published.conclusions_table(loaded.records, conclusions),
                              *published.tables(loaded.records, published.load_published())],
                "status": T.status(frames)}
    for tabs in sections.values():
        for t in tabs:
            result.files += T.write(t, out_dir / "tables").values()
    plot_files, result.plot_notes = plots_mod.make_plots(frames, out_dir / "plots", cells)
    plot_files += plots_mod.scaling_law(loaded.records, loaded.sets, out_dir / "plots", result.plot_notes)
    result.files += plot_files
    lock = lock_state().get("sha256")
    header = [f"{len(loaded.records)} records, {len(cells)} cells. A row is one configuration; ± only over "
              "seeds of one cell. Tags: the Awesome-LLMs-Pruning list's values.",
              "", "Default model: SmolLM2-135M-Instruct dequantised from Q4_1 (weights on a 4-bit grid).",
              "", f"Environment lock of this checkout: `{lock or 'none'}`."]
    titles = [("All cells", "overview"), ("Coverage", "coverage"), ("By model and pattern", "pattern"),
              ("Zero-shot", "zeroshot"), ("Latency", "latency"), ("KV cache", "kv"),
              ("Paper vs reproduced", "published"), ("Status", "status")]
    # skipped files named as a reader types them (no absolute machine path in a page)
    rel_problems = [(Path(results_dir.name) / Path(p).relative_to(results_dir) if Path(p).is_relative_to(results_dir)
                     else Path(p).name, why) for p, why in loaded.problems]
    md = out_dir / "leaderboard.md"
    md.write_text(T.leaderboard_markdown([(t, sections[k]) for t, k in titles], header, rel_problems,
                                         result.plot_notes, result.warnings), encoding="utf-8")
    index = write_site(out_dir, frames, loaded.records, cells, sections, plot_files, result.plot_notes,
                       rel_problems, lock, _checks(results_dir), result.warnings)
    result.files += [out_dir / "runs.csv", out_dir / "cells.csv", md, index]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__.splitlines()[0])
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
    print(f"leaderboard: {b.n_records} records, {b.n_cells} cells, {len(b.problems)} skipped -> "
          f"{b.out_dir / 'index.html'} ({len(b.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
