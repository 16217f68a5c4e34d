"""Compose prunebench configs outside a Hydra app (tests, reproduce, status commands)."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config"):
    """The DictConfig `python -m harness.run <overrides>` would see (hydra.* resolved lazily)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    cfg = _without_hydra(cfg)
    return cfg


def _without_hydra(cfg):
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
