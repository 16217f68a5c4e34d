"""Every shipped suite expands (or names the configs it still lacks); the demo grid's shape."""

from __future__ import annotations

import pytest

from harness.sweep import INVALID, MISSING, SuiteError, available_suites, expand_suite


@pytest.fixture
def data_env(data_dir, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_DATA_DIR", str(data_dir))


def test_demo_grid_cells_and_identity(tmp_path, data_env):
    from harness.config import compose_config
    from harness.records import run_id_for
    from omegaconf import OmegaConf

    suite = expand_suite("demo", [f"paths.results_dir={tmp_path}"])
    valid = sorted((c.config["method"]["name"], c.config["target"]["name"]) for c in suite.cells
                   if c.state != INVALID)
    assert valid == [("dense", "none"), ("magnitude", "nm_2_4"), ("magnitude", "unstructured_50"),
                     ("wanda", "nm_2_4"), ("wanda", "unstructured_50")]
    assert all(c.state == MISSING for c in suite.cells if c.state != INVALID)
    invalid = [c for c in suite.cells if c.state == INVALID]
    assert len(invalid) == 4 and all("cannot produce pattern" in c.invalid for c in invalid)
    assert len({c.run_id for c in suite.cells}) == 9
    # the suite name is not part of a run's identity: a plain `harness.run` of the same cell is
    # the same experiment (and counts as done for the sweep)
    cell = next(c for c in suite.cells if c.overrides == ["method=wanda", "target=nm_2_4"])
    plain = OmegaConf.to_container(compose_config(["method=wanda", "target=nm_2_4",
                                                   f"paths.results_dir={tmp_path}"]), resolve=True)
    assert run_id_for(plain) == cell.run_id


def test_command_line_restricts_a_swept_key(tmp_path, data_env):
    suite = expand_suite("demo", [f"paths.results_dir={tmp_path}", "method=wanda"])
    assert [c.overrides for c in suite.cells] == [["method=wanda", "target=none"],
                                                  ["method=wanda", "target=unstructured_50"],
                                                  ["method=wanda", "target=nm_2_4"]]


@pytest.mark.parametrize("name", available_suites())
def test_every_suite_expands_or_names_what_it_lacks(name, tmp_path, data_env):
    try:
        suite = expand_suite(name, [f"paths.results_dir={tmp_path}"])
    except SuiteError as exc:  # a suite may name a method or target that is not in this checkout, or a
        # model built locally first (encoder_kprune: harness.finetune)
        assert any(s in str(exc) for s in ("do not exist", "Could not find", "model directory not found")), str(exc)
        return
    assert any(c.state != INVALID for c in suite.cells)
