"""KV-cache machinery: measured bytes == analytic, eviction keeps exactly budget + window, the
bounded-cache perplexity with a full budget equals the plain perplexity, and the kv config group."""

from __future__ import annotations

import math

import pytest
import torch

from harness.adapters import adapter_for
from harness.evaluation.ppl import window_nll
from harness.kv.bounded import bounded_perplexity, generate_bounded
from harness.kv.cache import analytic_kv_bytes, cache_bytes
from harness.kv import POLICIES
from tests.conftest import make_tiny

KV_POLICIES = ("h2o", "keyformer", "streaming_llm")


def _windows(n=2, seq=64, vocab=200, seed=0):
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def test_measured_kv_bytes_equal_analytic(tiny_llama):
    model, _ = tiny_llama
    prompt = _windows(1, 40)
    _, runner = generate_bounded(model, adapter_for(model), prompt, new_tokens=5, chunk=16)
    assert runner.tokens() == [45] * 4
    # 2 x 4 layers x 2 kv heads x 16 head_dim x 45 tokens x 4 bytes
    assert cache_bytes(runner.cache) == analytic_kv_bytes(model.config, 45, torch.float32) == 2 * 4 * 2 * 16 * 45 * 4


def test_smollm2_analytic_bytes_per_token():
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      head_dim=64)
    assert analytic_kv_bytes(cfg, 1, torch.bfloat16) == 22.5 * 1024


@pytest.mark.parametrize("name", KV_POLICIES)
def test_eviction_keeps_exactly_budget_plus_window(tiny_llama, name):
    model, _ = tiny_llama
    policy = POLICIES.build(name, {"budget": 0.25, "window": 8})
    prompt = _windows(1, 64)
    _, runner = generate_bounded(model, adapter_for(model), prompt, new_tokens=7, policy=policy, chunk=16)
    capacity = round(0.25 * 64) + 8
    assert policy.capacity(64) == capacity == 24
    assert runner.tokens() == [capacity] * 4
    assert cache_bytes(runner.cache) == analytic_kv_bytes(model.config, capacity, torch.float32)


def test_h2o_keeps_heavy_hitters_and_window():
    from harness.kv.policy import KVState

    policy = POLICIES.build("h2o", {"budget": 2, "window": 2})
    state = KVState()
    scores = torch.tensor([5.0, 0.1, 3.0, 0.2, 0.3, 9.0, 0.0, 0.0])                 # 8 cached tokens
    state.scores[0] = scores.expand(1, 2, 8).clone()
    keep = policy.select(state, 0, 8, policy.capacity(100), 1, 2, "cpu")
    assert keep[0, 0].tolist() == [0, 5, 6, 7]   # top-2 among the first 6 (9.0 at 5, 5.0 at 0) + the last 2
    stream = POLICIES.build("streaming_llm", {"budget": 2, "window": 2, "sink": 1})
    assert stream.select(None, 0, 8, 4, 1, 2, "cpu")[0, 1].tolist() == [0, 5, 6, 7]


def test_bounded_ppl_full_budget_equals_plain(tiny_llama):
    model, _ = tiny_llama
    windows = _windows()
    nll, count = window_nll(model, windows, 1, "cpu", progress=False)
    plain = math.exp(nll / count)
    full = bounded_perplexity(model, adapter_for(model), windows, chunk=16)
    assert full["n_tokens"] == count
    assert full["value"] == pytest.approx(plain, rel=1e-5)
    # a policy whose capacity covers the whole window never evicts and is the same computation
    h2o = bounded_perplexity(model, adapter_for(model), windows, chunk=16,
                             policy=POLICIES.build("h2o", {"budget": 64, "window": 0}))
    assert h2o["evictions"] == 0 and h2o["value"] == pytest.approx(full["value"], rel=1e-6)
    small = bounded_perplexity(model, adapter_for(model), windows, chunk=16,
                               policy=POLICIES.build("h2o", {"budget": 0.1, "window": 4}))
    assert small["evictions"] > 0 and small["kv_tokens_final"] == round(0.1 * 64) + 4
    assert small["value"] != pytest.approx(full["value"], rel=1e-6)


def test_kv_group_composes_with_weight_method(results_dir):
    from harness.config import compose_config
    from harness.run import run_experiment
    from harness.validate import ConfigError, validate
    from omegaconf import OmegaConf

    cfg = compose_config(["model=tiny-llama", "method=magnitude", "target=unstructured_50", "kv=h2o",
                          "eval=kv_quick", "eval.kv_ppl.max_windows=1", "eval.kv_memory.context=128",
                          f"paths.results_dir={results_dir}", "runtime.threads=1"])
    plan = validate(OmegaConf.to_container(cfg, resolve=True))
    assert plan.kv.name == "h2o" and plan.method.name == "magnitude"
    record = run_experiment(cfg)
    assert record["status"] == "ok", record["error"]
    assert record["kv"]["name"] == "h2o" and record["kv"]["params"] == {"budget": 0.2, "window": 32}
    assert record["measured"]["sparsity_blocks"] == pytest.approx(0.5, abs=0.01)
    mem = record["metrics"]["kv_memory"]
    assert mem["tokens_held"] == round(0.2 * 128) + 32 and mem["kv_bytes_measured"] == mem["kv_bytes_analytic_held"]
    assert record["metrics"]["kv_ppl"]["wikitext2"]["kv_tokens_final"] == round(0.2 * 512) + 32
    bad = OmegaConf.to_container(compose_config(["model=tiny-llama"]), resolve=True)
    bad["kv"] = {"name": "wanda", "params": {}}
    with pytest.raises(ConfigError, match="not a KV-cache method"):
        validate(bad)


def test_policies_are_the_kv_axis_not_methods():
    from harness.config import CONF_DIR
    from methods.registry import available

    assert sorted(POLICIES) == sorted(KV_POLICIES) and not set(POLICIES) & set(available())
    for name in POLICIES:
        assert (CONF_DIR / "kv" / f"{name}.yaml").is_file(), name
        assert not (CONF_DIR / "method" / f"{name}.yaml").exists(), name


def test_default_kv_keeps_run_ids_stable():
    from harness.config import compose_config
    from harness.records import run_id_for
    from omegaconf import OmegaConf

    with_kv = OmegaConf.to_container(compose_config(["model=tiny-llama"]), resolve=True)
    without = {k: v for k, v in with_kv.items() if k != "kv"}
    assert with_kv["kv"]["name"] == "none" and run_id_for(with_kv) == run_id_for(without)
