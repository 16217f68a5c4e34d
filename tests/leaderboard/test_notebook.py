"""notebooks/analysis.ipynb executes top to bottom (nbclient, python3 kernel) on real records."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]


def _execute(results, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_RESULTS", str(results))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the notebook finds this repository's harness itself
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return nb, text


def test_analysis_notebook_runs_on_an_empty_results_dir(tmp_path, monkeypatch):
    _, text = _execute(tmp_path, monkeypatch)
    assert "0 records in" in text and "no records yet" in text
    assert f"harness from {REPO / 'harness'}" in text


def test_analysis_notebook_executes(tiny_results, monkeypatch):
    nb, text = _execute(tiny_results, monkeypatch)
    assert f"harness from {REPO / 'harness'}" in text
    assert "5 records in" in text and "0 unreadable files skipped" in text
    assert "ppl wikitext2 (sparsegpt-wanda-ppl v1, seq 512, 8 win)" in text
    assert "| Unstructured" in text or "Unstructured" in text
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))
    assert "figure files in" in text
    # the leaderboard's figures are shown inline too, not only written to a folder
    last = nb.cells[-1]
    assert sum("image/png" in o.get("data", {}) for o in last.get("outputs", [])) >= 1
