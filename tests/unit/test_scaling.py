"""harness.scaling: the sparse scaling law fitted to synthetic records drawn from known coefficients
(recovered within tolerance, the bootstrap interval covers them), one-line errors for records the law
cannot read, the CLI on the committed sweep, and the leaderboard page showing the fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.scaling import NAMES, Points, ScalingError, fit, law, load_points, main, optimal_sparsity

TRUE = {"a_S": 0.6, "b_S": 0.7, "c_S": 1.5, "b_N": 0.25, "a_D": 0.1, "b_D": 0.3, "c": 0.6}
SWEEP = Path(__file__).resolve().parents[2] / "results" / "experiments" / "scaling"


def _grid(noise: float, seed: int = 0) -> Points:
    s, n, d = (a.ravel() for a in np.meshgrid([0, .5, .75, .875], [1e5, 3e5, 8e5, 2e6], [1e5, 3e5, 1e6],
                                             indexing="ij"))
    nz = n * (1 - s)
    loss = law(TRUE, s, nz, d) * np.exp(np.random.default_rng(seed).normal(0, noise, len(s)))
    return Points(s, nz, d, loss, [f"r{i}" for i in range(len(s))])


def _record(s, n_dense, d, loss, run_id="x") -> dict:
    return {"run_id": run_id, "status": "ok", "measured": {"sparsity_blocks": s, "params_block_linears": n_dense},
            "recovery": {"budget": {"train_tokens": d}, "heldout_loss_after": loss}}


def test_fit_recovers_known_coefficients_and_the_bootstrap_covers_them():
    # 4 seeded draws (0.05% multiplicative noise, 48 points): every coefficient within 5%, and the
    # percentile intervals cover the true value in most of the 28 (coefficient, draw) pairs (a 95%
    # interval per coefficient misses now and then; a biased or collapsed bootstrap misses often)
    covered = []
    for seed in range(4):
        f = fit(_grid(noise=0.0005, seed=seed), bootstrap=40, seed=0)
        for k in NAMES:
            assert f.coef[k] == pytest.approx(TRUE[k], rel=0.05), (seed, k)
            lo, hi = f.ci[k]
            assert lo < hi, (seed, k)
            covered.append(lo <= TRUE[k] <= hi)
        assert f.r2 > 0.999 and f.rmse < 0.01 and f.bootstrap >= 35
    assert sum(covered) >= 0.8 * len(covered), sum(covered)


def test_noise_free_fit_is_exact():
    f = fit(_grid(noise=0.0), bootstrap=0)
    assert all(f.coef[k] == pytest.approx(TRUE[k], rel=1e-3) for k in NAMES)
    assert np.allclose(f.predicted, f.points.L, rtol=1e-6)


def test_optimal_sparsity_grows_with_compute():
    # the paper's finding, on the law itself: for fixed non-zeros, more compute -> higher optimal sparsity
    s_opt = [optimal_sparsity(TRUE, 3e5, c) for c in np.geomspace(1e11, 1e17, 7)]
    assert all(b >= a for a, b in zip(s_opt, s_opt[1:])) and s_opt[-1] > s_opt[0]


def test_a_record_missing_a_field_is_one_line_naming_it(tmp_path):
    (tmp_path / "records").mkdir()
    for i in range(8):
        (tmp_path / "records" / f"r{i}.json").write_text(json.dumps(_record(0.5, 1e5 * (i + 1), 1e5, 3.0, f"r{i}")))
    bad = _record(0.5, 1e5, 1e5, 3.0)
    del bad["recovery"]["heldout_loss_after"]
    (tmp_path / "records" / "r9.json").write_text(json.dumps(bad))
    with pytest.raises(ScalingError, match=r"r9\.json: missing field recovery\.heldout_loss_after") as exc:
        load_points(tmp_path)
    assert "\n" not in str(exc.value)
    assert main(["--results", str(tmp_path)]) == 2


def test_too_few_records_is_an_error(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a.json").write_text(json.dumps(_record(0.0, 1e5, 1e5, 3.0)))
    with pytest.raises(ScalingError, match="needs more than 7"):
        load_points(tmp_path)


@pytest.mark.skipif(not any(SWEEP.glob("records/*.json")), reason="no committed scaling sweep")
def test_cli_on_the_committed_sweep(tmp_path, capsys):
    assert main(["--results", str(SWEEP), "--bootstrap", "20", "--plot", str(tmp_path / "fit.png"),
                 "--json", str(tmp_path / "fit.json")]) == 0
    out = capsys.readouterr().out
    for k in NAMES:
        assert f"\n{k} " in out
    assert "R^2 = " in out and "optimal sparsity" in out
    fitted = json.loads((tmp_path / "fit.json").read_text())
    n = len(list(SWEEP.glob("records/*.json")))
    assert fitted["quality"]["n_points"] == n == len(fitted["points"]) and n >= 18
    assert (tmp_path / "fit.png").stat().st_size > 10_000


@pytest.mark.skipif(not any(SWEEP.glob("records/*.json")), reason="no committed scaling sweep")
def test_leaderboard_page_shows_the_scaling_plot(tmp_path):
    from leaderboard.__main__ import build

    results = tmp_path / "results"
    shutil.copytree(SWEEP, results / "experiments" / "scaling", ignore=shutil.ignore_patterns("logs", "leaderboard"))
    b = build(results, tmp_path / "site")
    png = tmp_path / "site" / "plots" / "scaling_law_experiments_scaling.png"
    assert png in b.files and png.is_file()
    assert 'src="plots/scaling_law_experiments_scaling.png"' in (tmp_path / "site" / "index.html").read_text()
