"""Each evaluator owns its config checks (`check(section, data_dir, device)` in its module) and
validation reaches them through the EVALUATORS registry: a bad value in any evaluator's section is
a one-line ConfigError before any model loads."""

from __future__ import annotations

import types

import pytest
from omegaconf import OmegaConf

from harness.config import compose_config
from harness.errors import ConfigError
from harness.evaluation import EVALUATORS, _has_evaluate_and_check, evaluated_texts, get_evaluator, length_keys
from harness.registry import Registry
from harness.schema import resolve_seeds
from harness.validate import validate

TINY = ["model=tiny-llama", "++eval.ppl.max_windows=2", "++eval.ppl.seq_len=128", "calib.n_samples=4",
        "calib.seq_len=64", "runtime.threads=1", "wandb.mode=disabled"]

# evaluator -> the eval preset that turns it on, a bad value for its section and the message its check gives
BAD = {
    "ppl": ([], "eval.ppl.datasets=[c5]", "unknown corpus 'c5'; known: c4, ptb, wikitext2"),
    "kv_ppl": (["eval=kv_quick"], "eval.kv_ppl.datasets=[c5]", "unknown corpus 'c5'; known: c4, ptb, wikitext2"),
    "kv_memory": (["eval=kv_quick"], "eval.kv_memory.source=c5", "unknown corpus 'c5'; known: c4, ptb, wikitext2"),
    "zeroshot": (["eval=zeroshot_quick"], "eval.zeroshot.tasks=[arc_eazy]",
                 "unknown zero-shot task(s) ['arc_eazy']; known: boolq, rte, hellaswag_llamacpp, winogrande, "
                 "arc_easy, arc_challenge, openbookqa, piqa, lambada_openai"),
    "accuracy": (["eval=accuracy_boolq"], "eval.accuracy.task=boolk",
                 "unknown classification task 'boolk'; known: boolq, rte"),
    "ppl_prompted": (["eval=compresso_quick"], "eval.ppl_prompted.prompt=pruned",
                     "eval ppl_prompted: prompt must be one of train, eval"),
    "latency": (["eval=latency_quick"], "eval.latency.sparse_kernel=cusparse_magic",
                "unknown latency.sparse_kernel 'cusparse_magic' (available: csr, flash_llm, none)"),
}


def _config(tmp_path, *overrides: str) -> dict:
    cfg = compose_config(TINY + [f"paths.results_dir={tmp_path / 'results'}",
                                 f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    return resolve_seeds(OmegaConf.to_container(cfg, resolve=True))


def test_every_registered_evaluator_has_evaluate_and_check():
    for name, module in EVALUATORS.items():
        assert callable(module.evaluate) and callable(module.check), name
        assert get_evaluator(name) is module.evaluate
    assert set(BAD) == set(EVALUATORS.names()), "a new evaluator needs a bad-value case here"


def test_registry_refuses_an_evaluator_without_check():
    only_evaluate = types.ModuleType("only_evaluate")
    only_evaluate.evaluate = lambda model, tokenizer, section, ctx: {}
    with pytest.raises(TypeError, match="lacks check"):
        Registry("eval section", {"broken": only_evaluate}, check=_has_evaluate_and_check)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_in_each_section_is_its_evaluators_error(name, tmp_path):
    preset, bad, message = BAD[name]
    with pytest.raises(ConfigError) as info:
        validate(_config(tmp_path, *preset, f"++{bad}"))
    assert str(info.value) == message


@pytest.mark.parametrize("name", sorted(BAD))
def test_validate_dispatches_to_the_evaluators_check(name, tmp_path, monkeypatch):
    # the check is called with the section as configured, the data folder and the run's device, and
    # what it raises is what validation raises (no model is loaded: validate loads none)
    preset, _, _ = BAD[name]
    config = _config(tmp_path, *preset)
    seen = []

    def refuse(section, data_dir, device):
        seen.append((section, data_dir, device))
        raise ConfigError(f"{name} refused")

    monkeypatch.setattr(EVALUATORS.get(name), "check", refuse)
    with pytest.raises(ConfigError, match=f"^{name} refused$"):
        validate(config)
    from harness.data import resolve_data_dir
    from harness.env import resolve_device

    assert seen == [(config["eval"][name], resolve_data_dir(None), resolve_device(config["runtime"]["device"]))]


def test_texts_and_lengths_come_from_the_evaluators():
    eval_cfg = {"ppl": {"datasets": ["wikitext2", "ptb"], "seq_len": 64},
                "kv_ppl": {"datasets": ["wikitext2"], "split": "validation", "seq_len": 128},
                "kv_memory": {"context": 512, "source": "wikitext2"}, "latency": None}
    assert evaluated_texts(eval_cfg) == (("wikitext2", "test"), ("ptb", "test"), ("wikitext2", "validation"))
    assert length_keys(eval_cfg) == [("eval.ppl.seq_len", 64), ("eval.kv_ppl.seq_len", 128)]
