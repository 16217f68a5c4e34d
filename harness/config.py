"""Compose prunebench configs outside a Hydra app (tests, reproduce, status commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def group_options(groups: list[str]) -> dict[str, list[str]]:
    """Options of config groups as Hydra sees them: conf/ plus every installed plugin's configs
    (hydra/launcher: basic, submitit_local, submitit_slurm, joblib when installed, ...)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            return {g: sorted(loader.get_group_options(g)) for g in groups}
    finally:
        GlobalHydra.instance().clear()


def check_group_choices(argv: list[str]) -> str | None:
    """Hydra reports an unknown group option (`method=wandaa`) with a multi-line listing; check the
    command line's group choices first so the user gets one line with near matches. Only names
    that exist nowhere (conf/ or an installed plugin) are rejected; sweeps (`method=wanda,magnitude`)
    are checked value by value. A name that is the option of exactly one other group (`method=h2o`,
    a KV-cache policy) gets that group instead: "use kv=h2o"."""
    import difflib

    wanted: list[tuple[str, str]] = []
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or "." in key or key.startswith("-") or any(c in value for c in "()[]{}$'\""):
            continue
        if "/" not in key and not (CONF_DIR / key).is_dir():
            continue  # a plain key (seed=1, force=true), not a group
        for v in value.split(","):
            wanted.append((key, v.strip()))
    if not wanted:
        return None
    options = group_options(sorted({k for k, _ in wanted}))
    for key, value in wanted:
        opts = options.get(key) or []
        if not opts:
            if "/" in key:  # hydra/foo: not a group Hydra knows; let Hydra say so
                continue
            return f"unknown config group {key!r}"
        if value not in opts:
            other = _group_holding(value, key)
            if other:   # method=h2o: h2o is a KV-cache policy, an option of the kv group
                return f"{value} is not a {key} but an option of {other}: use {other}={value}"
            near = difflib.get_close_matches(value, opts, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            return f"unknown {key} {value!r}{hint} (available: {', '.join(opts)})"
    return None


def _group_holding(value: str, not_group: str) -> str | None:
    """The one other top-level group of conf/ that has `value` as an option (None when no group or
    several have it: `none` is an option of many)."""
    holding = [p.name for p in CONF_DIR.iterdir()
               if p.is_dir() and p.name != not_group and (p / f"{value}.yaml").is_file()]
    return holding[0] if len(holding) == 1 else None


def model_name(model_cfg: dict[str, Any]) -> str:
    """The record's model name: `model.name` when given, else derived from the source (a hub id
    as is, a GGUF file's stem, a local directory's name)."""
    if model_cfg.get("name"):
        return str(model_cfg["name"])
    source = model_cfg.get("source")
    if not isinstance(source, dict):
        return str(source)
    kind = source.get("kind")
    if kind == "hub":
        return str(source.get("id"))
    if kind in ("gguf", "local"):
        path = Path(str(source.get("path")))
        return path.stem if kind == "gguf" else path.name
    if kind == "gguf_package":
        return Path(str(source.get("file"))).stem
    return str(source.get("family") or kind)
