"""Config validation before anything expensive: every error is one line, raised as ConfigError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.blocks.loop import PROPAGATIONS
from harness.errors import ConfigError, one_line  # noqa: F401  (ConfigError re-exported)



@dataclass
class Plan:
    method: Any
    target: Any
    allocator: Any
    device: str
    dtype: Any
    data_dir: Path | None
    cache_dir: Path
    results_dir: Path
    recovery: Any
    kv: Any = None          # KV-cache policy (methods/h2o.py, ...) or None for the full cache


def _expand(path: str | None) -> Path | None:
    return Path(path).expanduser().resolve() if path else None


def validate(config: dict) -> Plan:
    """Check the resolved config; returns the objects the run needs. No model is loaded."""
    from harness.blocks.allocators import build_allocator
    from harness.calibration import MODES
    from harness.data import check_available, corpus, resolve_data_dir
    from harness.env import resolve_device, resolve_dtype
    from harness.evaluation import EVALUATORS
    from harness.models import check_source
    from harness.recovery import check_recovery, get_recovery
    from harness.targets import Target
    from methods.registry import build_method

    try:
        method_cfg = config["method"]
        method = build_method(method_cfg["name"], method_cfg.get("params") or {})
        target = Target.from_config(config["target"])
        if target.pattern not in method.patterns:
            raise ConfigError(f"method {method.name} cannot produce pattern {target.pattern!r} "
                              f"(supports: {', '.join(sorted(method.patterns))})")
        alloc_cfg = config.get("allocator") or {"name": "uniform"}
        allocator = build_allocator(alloc_cfg["name"], alloc_cfg.get("params") or {})
        if alloc_cfg["name"] != "uniform" and target.pattern != "unstructured":
            raise ConfigError(f"allocator {alloc_cfg['name']} applies to unstructured targets only")
        model_cfg = config["model"]
        check_source(model_cfg["source"], bool(model_cfg.get("allow_pickle", False)))
        runtime = config.get("runtime", {})
        device = resolve_device(runtime.get("device", "auto"))
        dtype = resolve_dtype(runtime.get("dtype", "auto"), device)
        prune_cfg = config.get("prune", {})
        if prune_cfg.get("propagation", "pruned") not in PROPAGATIONS:
            raise ConfigError(f"prune.propagation must be one of {PROPAGATIONS}")
        paths = config.get("paths", {})
        data_dir = resolve_data_dir(paths.get("data_dir"))
        calib = config.get("calib") or {}
        if method.needs_calibration or getattr(allocator, "needs_calibration", False):
            if calib.get("mode", "reference") not in MODES:
                raise ConfigError(f"calib.mode must be one of {MODES}")
            if int(calib.get("n_samples", 0)) < 1 or int(calib.get("seq_len", 0)) < 2:
                raise ConfigError("calib.n_samples must be >= 1 and calib.seq_len >= 2")
            check_available(calib["corpus"], calib.get("split", "train"), data_dir)
        for name, section in (config.get("eval") or {}).items():
            if section is None:
                continue
            if name not in EVALUATORS:
                raise ConfigError(f"unknown eval section {name!r}; known: {', '.join(sorted(EVALUATORS))}")
            for ds in section.get("datasets", []) if name in ("ppl", "kv_ppl") else []:
                check_available(ds, section.get("split") or corpus(ds).eval_split, data_dir)
            if name == "zeroshot":
                from harness.evaluation.lm_eval_tasks import check_local_tasks

                check_local_tasks(section, data_dir)
        recovery_cfg = config.get("recovery") or {"name": "none"}
        recovery = get_recovery(recovery_cfg["name"])
        kv = build_kv_policy(config.get("kv"))
        if kv is None and getattr(method, "is_kv_policy", False):
            kv = method   # method=h2o alone: the method is the policy
        ppl = (config.get("eval") or {}).get("ppl") or {}
        check_recovery(recovery_cfg, [(ds, ppl.get("split") or corpus(ds).eval_split)
                                      for ds in ppl.get("datasets", [])], data_dir)
    except ConfigError as exc:  # TargetError, DataError, ... : already input errors, kept as raised
        if str(exc) != one_line(str(exc)):
            raise type(exc)(one_line(str(exc))) from None
        raise
    except (KeyError, ValueError) as exc:  # a missing config key or a malformed value
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(one_line(msg)) from None
    return Plan(method, target, allocator, device, dtype, data_dir,
                _expand(paths.get("cache_dir")) or Path.home() / ".cache" / "prunebench",
                _expand(paths.get("results_dir")) or Path("results").resolve(), recovery, kv)


def build_kv_policy(kv_cfg: dict | None):
    """The `kv` config group: none, or a registered KV-cache method (h2o, keyformer, streaming_llm)."""
    from methods.registry import build_method

    if not kv_cfg or kv_cfg.get("name", "none") == "none":
        return None
    policy = build_method(kv_cfg["name"], kv_cfg.get("params") or {})
    if not getattr(policy, "is_kv_policy", False):
        raise ConfigError(f"kv={kv_cfg['name']} is not a KV-cache method (one of h2o, keyformer, streaming_llm)")
    return policy
