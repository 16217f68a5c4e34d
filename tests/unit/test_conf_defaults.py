"""Every tunable default lives in conf/: each method's YAML lists every parameter of its dataclass at
the dataclass default, so `--cfg job` shows the full run; listing them leaves run ids unchanged."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from harness.config import CONF_DIR
from tests.conftest import REPO

METHOD_YAMLS = sorted((CONF_DIR / "method").glob("*.yaml"))


@pytest.mark.parametrize("path", METHOD_YAMLS, ids=lambda p: p.stem)
def test_method_yaml_lists_every_default(path):
    from harness.schema import defaults
    from methods.registry import get_method_class

    y = yaml.safe_load(path.read_text())
    declared = defaults(get_method_class(y["name"]))
    params = y.get("params") or {}
    assert set(declared) <= set(params), f"missing in {path.name}: {sorted(set(declared) - set(params))}"
    assert {k: params[k] for k in declared} == declared


def test_listing_defaults_keeps_the_run_id():
    from omegaconf import OmegaConf

    from harness.config import compose_config
    from harness.records import run_id_for

    cfg = OmegaConf.to_container(compose_config(["method=depth", "target=depth_25"]), resolve=True)
    bare = {**cfg, "method": {**cfg["method"], "params": {}}}
    assert run_id_for(cfg) == run_id_for(bare)


def test_cfg_job_shows_method_defaults():
    proc = subprocess.run([sys.executable, "-m", "harness.run", "method=depth", "target=depth_25", "--cfg", "job"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    method = yaml.safe_load(proc.stdout)["method"]["params"]
    assert {"latency_repeats": 3, "score_samples": 0, "shapley_rounds": 2}.items() <= method.items()
