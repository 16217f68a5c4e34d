"""The Plan's typed config sections: parsed once by validate(), read by the stages instead of the raw
config (issue 11, "Run state: stages return values")."""

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import harness.run as run
from harness.config import compose_config
from harness.schema import resolve_seeds
from harness.validate import CalibPlan, OutputPlan, PrunePlan, RuntimePlan, TrackingPlan, validate

CONF = Path(__file__).resolve().parents[2] / "conf"
TINY = ["model=tiny-llama", "eval.ppl.max_windows=2", "eval.ppl.seq_len=64", "calib.n_samples=4",
        "calib.seq_len=64", "runtime.threads=1"]


def _yaml(path: str) -> dict:
    return yaml.safe_load((CONF / path).read_text())


@pytest.mark.parametrize("cls, section", [
    (CalibPlan, lambda: _yaml("calib/c4_quick.yaml")),
    (PrunePlan, lambda: _yaml("config.yaml")["prune"]),
    (OutputPlan, lambda: _yaml("config.yaml")["output"]),
    (RuntimePlan, lambda: _yaml("config.yaml")["runtime"]),
])
def test_section_defaults_equal_the_yaml_defaults(cls, section):
    # a key left out of a config means what the shipped YAML value means
    assert cls.from_config({}) == cls.from_config(None) == cls() == cls.from_config(section())


def test_validate_parses_every_section_once_into_frozen_values(tmp_path):
    config = resolve_seeds(OmegaConf.to_container(compose_config(
        TINY + ["method=wanda", "target=unstructured_50", "calib.mode=stream", "prune.batch_size=2",
                "prune.reuse=false", "output.save_model=true", "runtime.max_memory_gb=3", "seed=5",
                "recovery=lora", "recovery.stop_after=1", f"paths.results_dir={tmp_path}",
                f"paths.cache_dir={tmp_path / 'cache'}"]), resolve=True))
    plan = validate(config)
    assert plan.calib == CalibPlan("c4", "train", 4, 64, 5, "stream", False)   # seed resolved from the top level
    assert plan.prune == PrunePlan(2, "pruned", False)
    assert plan.output == OutputPlan(True, "safetensors")
    assert plan.runtime == RuntimePlan("auto", 3.0, "auto")
    assert plan.seed == 5 and plan.model.name == "tiny-llama"
    assert plan.force is False and plan.retry_failed is True
    # W&B: the mode as configured (tracking resolves and reports a bad one), dir defaulting to the results
    assert plan.tracking == TrackingPlan(config["wandb"]["mode"], "prunebench", None, str(tmp_path), None)
    assert TrackingPlan.from_config({"mode": "disabled", "project": "p", "entity": "e", "dir": "w"}, {"name": "grid"},
                                    {"results_dir": "r"}) == TrackingPlan("disabled", "p", "e", "w", "grid")
    assert TrackingPlan.from_config({}, None, {"results_dir": "r"}).dir == "r"
    assert TrackingPlan.from_config(None, None, None) == TrackingPlan()
    assert validate(dict(config, suite={"name": "tinygrid"})).tracking.group == "tinygrid"
    assert validate(dict(config, force=True, retry_failed=False)).force is True
    assert validate(dict(config, retry_failed=False)).retry_failed is False
    # the record's path roots: every configured *_dir, with data / cache / results as resolved
    assert plan.dirs["results_dir"] == plan.results_dir == tmp_path.resolve()
    assert plan.dirs["cache_dir"] == plan.cache_dir and plan.dirs["data_dir"] == plan.data_dir
    assert "checkpoint_dir" in plan.dirs and plan.dirs["checkpoint_dir"] == config["paths"]["checkpoint_dir"]
    assert [name for name, _ in plan.evals] == [k for k, v in config["eval"].items() if v is not None]
    rp = plan.recovery_plan
    assert rp.name == "lora" and rp.params["steps"] == config["recovery"]["steps"]
    assert rp.eval_texts == (("wikitext2", "test"),)
    from harness.recovery import lora
    from harness.recovery.budget import parse_budget

    assert rp.budget == parse_budget(config["recovery"], lora.OWN_KEYS, "lora") and rp.budget.seed == 5
    # checkpoints keyed by the identity without the preemption knob: the same folder with or without it
    without = resolve_seeds(dict(config, recovery={k: v for k, v in config["recovery"].items() if k != "stop_after"}))
    assert rp.checkpoint_dir == validate(without).recovery_plan.checkpoint_dir
    assert rp.checkpoint_dir.parent == (tmp_path / "cache" / "checkpoints").resolve()
    for section in (plan.calib, plan.prune, plan.output, plan.runtime, plan.model, plan.tracking, rp):
        with pytest.raises(dataclasses.FrozenInstanceError):
            section.__setattr__(dataclasses.fields(section)[0].name, None)
    with pytest.raises(TypeError):
        rp.params["steps"] = 1   # read-only; the recovery module gets a copy
    # the sections are copies: editing the raw config afterwards changes nothing the stages read
    config["calib"]["n_samples"] = 99
    config["eval"]["ppl"]["seq_len"] = 7
    assert plan.calib.n_samples == 4 and dict(plan.evals)["ppl"]["seq_len"] == 64


class _Untouchable(Mapping):
    """The raw config as the stages would see it: any read is a test failure."""

    def __getitem__(self, key):
        raise AssertionError(f"a stage read the raw config[{key!r}] after validation")

    def __iter__(self):
        raise AssertionError("a stage iterated the raw config after validation")

    def __len__(self):
        raise AssertionError("a stage read the raw config after validation")

    def get(self, key, default=None):
        raise AssertionError(f"a stage read the raw config.get({key!r}) after validation")


def test_stages_never_read_the_raw_config(tmp_path, monkeypatch):
    # Every argument of the stage loop that is a mapping (the raw config, if passed) raises on any read;
    # calibration, pruning, recovery and evaluation all run and the record is ok.
    # The recovery budget was parsed at validation: parsing it again inside the stages fails the run.
    import harness.recovery.budget as budget
    import harness.recovery.train as train

    original = run._run_stages

    def parsed_again(*args, **kwargs):
        raise AssertionError("the recovery budget was parsed again after validation")

    def poisoned(*args):
        monkeypatch.setattr(budget, "parse_budget", parsed_again)   # where it lives
        monkeypatch.setattr(train, "parse_budget", parsed_again)    # the name the training loop holds
        return original(*[_Untouchable() if isinstance(a, Mapping) else a for a in args])

    monkeypatch.setattr(run, "_run_stages", poisoned)
    cfg = compose_config(TINY + ["method=wanda", "target=unstructured_50", "recovery=lora", "recovery.steps=2",
                                 "recovery.batch_size=1", "recovery.seq_len=32", "recovery.heldout_docs=2",
                                 "recovery.heldout_windows=1", "recovery.checkpoint_every=0",
                                 "recovery.warmup_steps=0",
                                 "output.save_model=true", f"paths.results_dir={tmp_path}",
                                 f"paths.cache_dir={tmp_path / 'cache'}"])
    rec = run.run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"] and rec["error"]["traceback"]
    assert rec["recovery"]["name"] == "lora" and rec["metrics"]["ppl"]["wikitext2"]["value"] > 0
    assert rec["calibration"]["n_samples"] == 4 and rec["output"]["format"] == "safetensors"
