"""Leaderboard: records -> pandas frames -> tables (Markdown/CSV/LaTeX), plots, a static site.

load.py    read and validate every record; unreadable files are named and skipped
frame.py   flatten records into a DataFrame; dense baselines, deltas, mean ± std over seeds
tables.py  tables grouped by the Awesome-LLMs-Pruning tags; per model × pattern tables
plots.py   matplotlib figures (PNG + SVG); a plot without data is skipped with a note
site.py    static HTML (no network, works from file://)
table.py   one result set as a Markdown table (`python -m leaderboard.table RESULTS_DIR`)
A package beside harness/ and methods/ rather than inside harness/: it lists every registered
method and its paper, so it reads both, and harness/ stays below methods/.
`python -m leaderboard --results results` builds everything into results/leaderboard.
"""
