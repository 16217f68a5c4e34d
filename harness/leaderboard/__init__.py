"""Leaderboard: records -> pandas frames -> tables (Markdown/CSV/LaTeX), plots, a static site.

load.py    read and validate every record; unreadable files are named and skipped
frame.py   flatten records into a DataFrame; dense baselines, deltas, mean ± std over seeds
tables.py  tables grouped by the Awesome-LLMs-Pruning tags; per model × pattern tables
plots.py   matplotlib figures (PNG + SVG); a plot without data is skipped with a note
site.py    static HTML (no network, works from file://)
`python -m harness.leaderboard --results results` builds everything into results/leaderboard.
"""
