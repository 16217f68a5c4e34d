"""Invalid configs fail fast with a one-line error, before any model loads."""

import subprocess
import sys

import pytest

from harness.config import compose_config
from harness.run import run_experiment
from harness.validate import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("overrides,match", [
    (["method.name=wandaa"], "did you mean wanda"),
    (["method=wanda", "target=unstructured_50", "target.ratio=1.2"], r"\[0, 1\)"),
    (["method=wanda", "target=nm_2_4", "target.n=6"], "N <= M"),
    (["method=dense", "target=unstructured_50"], "cannot produce pattern 'unstructured'"),
    (["method=magnitude_global", "target=nm_2_4"], "cannot produce pattern 'nm'"),
    (["method=wanda", "target=unstructured_50", "calib.corpus=c5"], "unknown corpus"),
    (["method=wanda", "target=unstructured_50", "paths.data_dir=/nonexistent"], "does not exist"),
    (["method=wanda", "target=unstructured_50", "+method.params.alpha=2"], "bad parameters"),
    (["model.source.kind=torrent"], "unknown model source kind"),
])
def test_invalid_config_fails_fast(overrides, match, tmp_path):
    cfg = compose_config(overrides + [f"paths.results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=match) as info:
        run_experiment(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "records").exists()  # nothing ran, nothing written


def test_missing_data_file_fails_fast(tmp_path):
    (tmp_path / "data").mkdir()
    cfg = compose_config([f"paths.data_dir={tmp_path / 'data'}", f"paths.results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="missing"):
        run_experiment(cfg)


def test_pickle_checkpoints_are_refused(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "pytorch_model.bin").write_bytes(b"not loaded")
    (model_dir / "config.json").write_text("{}")
    cfg = compose_config(["model.source.kind=local", f"+model.source.path={model_dir}",
                          f"paths.results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="allow_pickle"):
        run_experiment(cfg)


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.run", "method=wanda", "target=nm_2_4",
                           "target.n=5", f"paths.results_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["prunebench: config error: N:M target needs N <= M, got 5:4"]


def test_cli_unknown_group_option_is_one_line_with_near_matches(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.run", "method=wandaa", f"paths.results_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown method 'wandaa'; did you mean wanda" in lines[0]
