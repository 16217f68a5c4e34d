"""Bring your own model: model=hf|hub|gguf|local, names derived from the source, one-line errors for
a source that cannot load offline or has the wrong shape, and runtime.offline on the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO


def _config(*overrides):
    from harness.config import compose_config

    return OmegaConf.to_container(compose_config(list(overrides)), resolve=True)


def test_hf_and_hub_are_one_config_and_the_name_is_the_id():
    from harness.config import model_name
    from harness.records import run_id_for

    hf = _config("model=hf", "model.source.id=HuggingFaceTB/SmolLM2-135M")
    hub = _config("model=hub", "model.source.id=HuggingFaceTB/SmolLM2-135M")
    assert hf["model"] == hub["model"] and hf["model"]["name"] is None
    assert model_name(hf["model"]) == "HuggingFaceTB/SmolLM2-135M"
    named = {**hf, "model": {**hf["model"], "name": "HuggingFaceTB/SmolLM2-135M"}}
    assert run_id_for(named) == run_id_for(hf)  # filling in the derived name keeps the identity
    gguf = _config("model=gguf", "model.source.path=/models/Llama-2-7B.Q4_0.gguf")
    local = _config("model=local", "model.source.path=/models/llama-7b-pruned/")
    assert model_name(gguf["model"]) == "Llama-2-7B.Q4_0" and model_name(local["model"]) == "llama-7b-pruned"


@pytest.mark.parametrize("overrides, needle", [
    (["model=hf", "model.source.id=HuggingFaceTB/SmolLM2-135M"], "set runtime.offline=false"),
    (["model=hf"], "needs model.source.id=<org/name>"),
    (["model=gguf"], "needs model.source.path=<path>"),
    (["model=gguf", "model.source=gguf:/models/x.gguf"], "model.source must be a mapping"),
    (["model=local", "model.source.path=/no/such/dir"], "local model directory not found")])
def test_bad_sources_are_one_line_config_errors(overrides, needle, data_dir):
    from harness.validate import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate(_config(*overrides))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_hub_model_offline_is_one_line_naming_the_switch():
    proc = subprocess.run([sys.executable, "-m", "harness.run", "model=hf",
                           "model.source.id=HuggingFaceTB/SmolLM2-135M", "runtime.threads=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "runtime.offline=false" in lines[0] and "HuggingFaceTB/SmolLM2-135M" in lines[0]


def test_offline_switch_read_from_the_command_line(monkeypatch):
    from harness.env import offline_from_argv

    monkeypatch.delenv("PRUNEBENCH_ONLINE", raising=False)
    assert offline_from_argv(["model=hf"]) is True
    assert offline_from_argv(["runtime.offline=false"]) is False
    assert offline_from_argv(["runtime.offline=true"]) is True
    monkeypatch.setenv("PRUNEBENCH_ONLINE", "1")
    assert offline_from_argv([]) is False


def test_offline_resolution_reads_the_commit_from_the_cache(tmp_path, monkeypatch):
    """A branch in the local HF cache resolves to the snapshot's commit sha; the record says so."""
    from harness.models import resolve_hub_revision

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--name"
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert resolve_hub_revision({"id": "org/name", "revision": "main"}, offline=True) == {
        "resolved_revision": sha, "revision_resolved_from": "main"}
    assert resolve_hub_revision({"id": "org/name", "revision": sha}, offline=True) == {"resolved_revision": sha}
