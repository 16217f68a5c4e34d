"""Shared fixtures. The offline switches are set before transformers/datasets are imported."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# W&B costs seconds per run; tests that check the logging turn it on (wandb.mode=offline)
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from harness.env import default_cache_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Shared model cache (the dequantized SmolLM2 copy is reused across sessions)."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from harness.data import resolve_data_dir

    path = resolve_data_dir(None)
    if path is None:
        pytest.skip("no data directory (../shared/data or PRUNEBENCH_DATA_DIR)")
    return path


def make_tiny(family: str = "llama", seed: int = 0, **overrides):
    """A tiny random-init model + byte tokenizer (family = transformers model_type)."""
    from harness.models import build_random_init

    config = dict(TINY_LLAMA)
    if family == "opt":
        config = dict(hidden_size=64, ffn_dim=128, num_hidden_layers=4, num_attention_heads=4,
                      word_embed_proj_dim=64, max_position_embeddings=512)
    config.update(overrides)
    model, tok = build_random_init(family, config, seed)
    return model.eval(), tok


# every family with a conf/model/tiny-<family>.yaml (transformers model_type after "tiny-")
TINY_FAMILIES = sorted(p.stem[len("tiny-"):] for p in (REPO / "conf" / "model").glob("tiny-*.yaml"))
MOE_FAMILIES = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"]


def tiny_family_config(family: str) -> dict:
    import yaml

    return yaml.safe_load((REPO / "conf" / "model" / f"tiny-{family}.yaml").read_text())


def make_tiny_family(family: str, seed: int = 0):
    """The model conf/model/tiny-<family>.yaml describes, loaded as load_model does (fused MoE
    experts split into linears)."""
    from harness.experts import unfuse_experts
    from harness.models import build_random_init

    source = tiny_family_config(family)["source"]
    model, tok = build_random_init(source["family"], dict(source.get("config") or {}), seed)
    unfuse_experts(model)
    return model.eval(), tok


@pytest.fixture
def tiny_llama():
    return make_tiny("llama")


@pytest.fixture(scope="session")
def smollm2(cache_dir):
    """SmolLM2-135M loaded once per session (float32, CPU)."""
    from harness.config import compose_config
    from harness.models import load_model

    cfg = compose_config(["model=smollm2-135m"])
    return load_model(cfg.model.name, dict(cfg.model.source), torch.float32, "cpu", cache_dir)


@pytest.fixture
def results_dir(tmp_path) -> Path:
    return tmp_path / "results"
