"""Config validation before anything expensive: every error is one line, raised as ConfigError."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from pathlib import Path
from typing import Any

from harness.blocks.loop import PROPAGATIONS
from harness.errors import ConfigError, one_line  # noqa: F401  (ConfigError re-exported)



# Typed, frozen sections of the config, parsed once by validate(): the stages read these, never the
# raw config (which the record keeps as resolved). Each default equals the YAML default in conf/
# (tests/unit/test_plan_sections.py checks), so a key left out means what the shipped value means.
@dataclass(frozen=True)
class CalibPlan:
    corpus: str = "c4"
    split: str = "train"
    n_samples: int = 16
    seq_len: int = 256
    seed: int | None = None          # None: the run's seed
    mode: str = "reference"
    allow_eval_split: bool = False

    @classmethod
    def from_config(cls, section: dict | None) -> "CalibPlan":
        c = section or {}
        d = cls()
        return cls(str(c.get("corpus", d.corpus)), str(c.get("split", d.split)),
                   int(c.get("n_samples", d.n_samples)), int(c.get("seq_len", d.seq_len)),
                   int(c["seed"]) if c.get("seed") is not None else None, str(c.get("mode", d.mode)),
                   bool(c.get("allow_eval_split", d.allow_eval_split)))


@dataclass(frozen=True)
class PrunePlan:
    batch_size: int = 1
    propagation: str = "pruned"
    reuse: bool = True
    checkpoint_dir: Path | None = None   # for methods that train while pruning; keyed like recovery's

    @classmethod
    def from_config(cls, section: dict | None) -> "PrunePlan":
        c = section or {}
        return cls(int(c.get("batch_size", 1)), str(c.get("propagation", "pruned")), bool(c.get("reuse", True)))


@dataclass(frozen=True)
class OutputPlan:
    save_model: bool = False
    format: str = "safetensors"

    @classmethod
    def from_config(cls, section: dict | None) -> "OutputPlan":
        c = section or {}
        return cls(bool(c.get("save_model")), str(c.get("format") or "safetensors"))


@dataclass(frozen=True)
class RuntimePlan:
    offload: str = "auto"
    max_memory_gb: float | None = None
    dtype: str = "auto"
    devices: tuple = ()     # runtime.devices; () = the one device of Plan.device

    @classmethod
    def from_config(cls, section: dict | None) -> "RuntimePlan":
        c = section or {}
        max_gb = c.get("max_memory_gb")
        return cls(str(c.get("offload", "auto")), float(max_gb) if max_gb else None, str(c.get("dtype", "auto")),
                   tuple(str(d) for d in c.get("devices") or ()))


@dataclass(frozen=True)
class ModelPlan:
    name: str
    source: Any
    allow_pickle: bool = False
    adapter: str | None = None

    @classmethod
    def from_config(cls, section: dict) -> "ModelPlan":
        return cls(section.get("name"), copy.deepcopy(section["source"]), bool(section.get("allow_pickle", False)),
                   section.get("adapter"))

    def as_dict(self) -> dict:
        """name/source/allow_pickle, as the recovery's dense-teacher reload reads them."""
        return {"name": self.name, "source": copy.deepcopy(self.source), "allow_pickle": self.allow_pickle}


@dataclass(frozen=True)
class TrackingPlan:
    """Where and how the run is logged to W&B (harness.tracking). The mode stays as configured: an
    unknown mode is reported by tracking as a warning and never fails the run, so it is not checked here."""
    mode: str | None = None          # None: $WANDB_MODE at logging time, else offline
    project: str = "prunebench"
    entity: str | None = None
    dir: str = "."                   # wandb.dir, else paths.results_dir as configured, else the working dir
    group: str | None = None         # the suite's name (a sweep's cells share it); None: the model's name

    @classmethod
    def from_config(cls, section: dict | None, suite: dict | None, paths: dict | None) -> "TrackingPlan":
        c, d = dict(section or {}), cls()
        return cls(c.get("mode") or None, c.get("project") or d.project, c.get("entity"),
                   str(c.get("dir") or (paths or {}).get("results_dir") or d.dir), (suite or {}).get("name") or None)


@dataclass(frozen=True)
class RecoveryPlan:
    name: str = "none"
    params: Any = None                   # the recovery section as resolved (a read-only mapping)
    checkpoint_dir: Path | None = None   # keyed by the run's identity without `stop_after`
    eval_texts: tuple = ()               # (corpus, split) evaluated, never trained on
    budget: Any = None                   # harness.recovery.budget.Budget, parsed once (check_recovery)

    def section(self) -> dict:
        """A fresh copy of the section for the recovery module."""
        return copy.deepcopy(dict(self.params or {}))


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
    kv: Any = None          # KV-cache policy (harness.kv.POLICIES) or None for the full cache
    # the parameter defaults of the method, KV policy and allocator named (see param_defaults)
    param_defaults: dict = field(default_factory=dict)
    seed: int = 0
    model: ModelPlan | None = None
    calib: CalibPlan = field(default_factory=CalibPlan)
    prune: PrunePlan = field(default_factory=PrunePlan)
    output: OutputPlan = field(default_factory=OutputPlan)
    runtime: RuntimePlan = field(default_factory=RuntimePlan)
    recovery_plan: RecoveryPlan = field(default_factory=RecoveryPlan)
    tracking: TrackingPlan = field(default_factory=TrackingPlan)
    evals: tuple = ()       # ((evaluator name, its section), ...) in config order, None sections dropped
    force: bool = False         # run again even when an ok record exists
    retry_failed: bool = True   # run again when a failed record exists
    # every *_dir of `paths` as configured, data/cache/results resolved: the roots the record's
    # absolute paths are written relative to (harness.records.path_roots)
    dirs: Any = field(default_factory=lambda: MappingProxyType({}))


def _expand(path: str | None) -> Path | None:
    return Path(path).expanduser().resolve() if path else None


def validate(config: dict) -> Plan:
    """Check the resolved config; returns the objects the run needs. No model is loaded. The stages
    run in this order and the first error wins: schema, method x target x allocator, model source
    and runtime, calibration data, each eval section's own check (harness.evaluation: its data,
    tasks, kernels), output format, recovery and KV policy, lengths."""
    from harness.data import resolve_data_dir
    from harness.env import default_cache_dir
    from harness.schema import check_config

    check_config(config)   # every numeric field of every group: a SchemaError (ConfigError) naming the key
    try:
        method, target, allocator = _method_target_allocator(config)
        device, dtype = _runtime(config)
        paths = config.get("paths", {})
        data_dir = resolve_data_dir(paths.get("data_dir"))
        uses_calib = method.needs_calibration or getattr(allocator, "needs_calibration", False)
        _check_calib(config.get("calib") or {}, uses_calib, data_dir)
        _check_evals(config.get("eval") or {}, data_dir, device)
        _check_output(config, target.pattern)
        recovery, kv, budget = _recovery_and_kv(config, data_dir)
        _check_training_pruning(method, (config.get("recovery") or {}).get("name", "none"))
        if uses_calib:
            check_calib_not_eval(config.get("calib") or {}, config.get("eval") or {})
        check_lengths(config, uses_calib)
    except ConfigError as exc:  # TargetError, DataError, ... : already input errors, kept as raised
        if str(exc) != one_line(str(exc)):
            raise type(exc)(one_line(str(exc))) from None
        raise
    except (KeyError, ValueError) as exc:  # a missing config key or a malformed value
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(one_line(msg)) from None
    defaults = param_defaults(config)
    cache_dir = _expand(paths.get("cache_dir")) or default_cache_dir().resolve()
    results_dir = _expand(paths.get("results_dir")) or default_results_dir()
    dirs = {**{k: v for k, v in paths.items() if k.endswith("_dir")},
            "data_dir": data_dir, "cache_dir": cache_dir, "results_dir": results_dir}
    return Plan(method, target, allocator, device, dtype, data_dir, cache_dir, results_dir, recovery, kv, defaults,
                seed=int(config.get("seed", 0)), model=ModelPlan.from_config(config["model"]),
                calib=CalibPlan.from_config(config.get("calib")),
                prune=dataclasses.replace(PrunePlan.from_config(config.get("prune")),
                                          checkpoint_dir=prune_checkpoint_dir(config, cache_dir, defaults)),
                output=OutputPlan.from_config(config.get("output")),
                runtime=RuntimePlan.from_config(config.get("runtime")),
                recovery_plan=recovery_plan(config, cache_dir, defaults, budget),
                tracking=TrackingPlan.from_config(config.get("wandb"), config.get("suite"), paths),
                evals=tuple((name, copy.deepcopy(section)) for name, section in (config.get("eval") or {}).items()
                            if section is not None),
                force=bool(config.get("force", False)), retry_failed=bool(config.get("retry_failed", True)),
                dirs=MappingProxyType(dirs))


def _checkpoint_base(config: dict, cache_dir: Path) -> Path:
    paths = config.get("paths") or {}
    return Path(paths["checkpoint_dir"]).expanduser() if paths.get("checkpoint_dir") else cache_dir / "checkpoints"


def prune_checkpoint_dir(config: dict, cache_dir: Path, defaults: dict) -> Path | None:
    """Checkpoint folder of a method that trains while pruning (its class sets `trains = True`), keyed
    by the run's identity without the method's `stop_after`, so a stopped or killed run resumes."""
    from harness.records import run_id_for
    from methods.registry import get_method_class

    method = dict(config.get("method") or {})
    if not getattr(get_method_class(method["name"]), "trains", False):
        return None
    params = {k: v for k, v in dict(method.get("params") or {}).items() if k != "stop_after"}
    return _checkpoint_base(config, cache_dir) / run_id_for(dict(config, method=dict(method, params=params)),
                                                            defaults)


def recovery_plan(config: dict, cache_dir: Path, defaults: dict, budget=None) -> RecoveryPlan:
    """The recovery section, its parsed budget, its checkpoint folder and the texts it must never train on."""
    from harness.evaluation import evaluated_texts
    from harness.records import run_id_for

    section = dict(config.get("recovery") or {})
    name = section.get("name", "none")
    eval_texts = evaluated_texts(config.get("eval") or {})
    checkpoint_dir = None
    if name != "none":
        # Checkpoints are keyed by the run's identity without the simulated-preemption knob, so a job
        # stopped by `stop_after` (or killed) resumes when the same config runs again.
        resume_cfg = dict(config, recovery={k: v for k, v in section.items() if k != "stop_after"})
        checkpoint_dir = _checkpoint_base(config, cache_dir) / run_id_for(resume_cfg, defaults)
    return RecoveryPlan(name, MappingProxyType(copy.deepcopy(section)), checkpoint_dir, eval_texts, budget)


def param_defaults(config: dict) -> dict[str, dict]:
    """{"method" | "kv" | "allocator": {field: default}} of the parameter dataclasses the config
    names. Run identity (harness.identity) drops a parameter at its default, so that a parameter
    added later at its default leaves existing run ids unchanged; resolving the names here keeps
    identity free of the registries. A name no registry holds has no defaults (validate reports it)."""
    from harness.blocks.allocators import ALLOCATORS
    from harness.kv import POLICIES
    from harness.schema import defaults
    from methods.registry import METHODS

    out: dict[str, dict] = {}
    for group, registry in (("method", METHODS), ("kv", POLICIES), ("allocator", ALLOCATORS)):
        section = config.get(group)
        name = section.get("name") if isinstance(section, dict) else None
        cls = registry.get(name) if isinstance(name, str) and name in registry else None
        out[group] = defaults(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    return out


def _method_target_allocator(config: dict) -> tuple[Any, Any, Any]:
    from harness.blocks.allocators import build_allocator
    from harness.targets import Target, allocator_mismatch, pattern_mismatch
    from harness.kv import POLICIES
    from methods.registry import METHODS, build_method

    method_cfg = config["method"]
    name = method_cfg["name"]
    if name not in METHODS and name in POLICIES:
        raise ConfigError(f"{name} is a KV-cache policy, not a method: use kv={name}")
    method = build_method(name, method_cfg.get("params") or {})
    target = Target.from_config(config["target"])
    mismatch = pattern_mismatch(method, target.pattern)
    if mismatch:
        raise ConfigError(mismatch)
    alloc_cfg = config.get("allocator") or {"name": "uniform"}
    allocator = build_allocator(alloc_cfg["name"], alloc_cfg.get("params") or {})
    mismatch = allocator_mismatch(alloc_cfg["name"], target.pattern)
    if mismatch:
        raise ConfigError(mismatch)
    return method, target, allocator


def _check_training_pruning(method, recovery: str) -> None:
    """A method that prunes while the model trains (gradual pruning) needs a recovery that drives it."""
    drivers = getattr(method, "training_recoveries", ())
    if drivers and recovery not in drivers:
        raise ConfigError(f"method {method.name} prunes while the model trains: it needs recovery="
                          f"{' or '.join(drivers)}, got recovery={recovery}")


def _runtime(config: dict) -> tuple[str, Any]:
    """The model source is loadable as configured; device, dtype, offload and propagation are known."""
    from harness.blocks.spread import check_devices
    from harness.env import resolve_device, resolve_dtype
    from harness.models import check_source
    from harness.offload import MODES as OFFLOAD_MODES

    model_cfg = config["model"]
    runtime = config.get("runtime", {})
    check_source(model_cfg["source"], bool(model_cfg.get("allow_pickle", False)),
                 offline=bool(runtime.get("offline", True)))
    devices = [resolve_device(d) for d in check_devices(runtime.get("devices"))]
    device = devices[0] if devices else resolve_device(runtime.get("device", "auto"))   # devices: the first is primary
    dtype = resolve_dtype(runtime.get("dtype", "auto"), device)
    if runtime.get("offload", "auto") not in OFFLOAD_MODES:
        raise ConfigError(f"runtime.offload must be one of {', '.join(OFFLOAD_MODES)}, got {runtime.get('offload')!r}")
    if runtime.get("max_memory_gb") is not None and not float(runtime["max_memory_gb"]) > 0:
        raise ConfigError(f"runtime.max_memory_gb must be > 0, got {runtime['max_memory_gb']}")
    prune_cfg = config.get("prune", {})
    if prune_cfg.get("propagation", "pruned") not in PROPAGATIONS:
        raise ConfigError(f"prune.propagation must be one of {PROPAGATIONS}")
    return device, dtype


def _check_calib(calib: dict, uses_calib: bool, data_dir: Path | None) -> None:
    """Calibration settings are known and its corpus is available offline (when the method calibrates)."""
    from harness.calibration import MODES
    from harness.data import check_available

    if uses_calib:
        if calib.get("mode", "reference") not in MODES:
            raise ConfigError(f"calib.mode must be one of {MODES}")
        if int(calib.get("n_samples", 0)) < 1 or int(calib.get("seq_len", 0)) < 2:
            raise ConfigError("calib.n_samples must be >= 1 and calib.seq_len >= 2")
        check_available(calib["corpus"], calib.get("split", "train"), data_dir)


def _check_evals(eval_cfg: dict, data_dir: Path | None, device: str) -> None:
    """Every eval section names a registered evaluator and passes that evaluator's own check
    (harness.evaluation: data available offline, zero-shot task files, a sparse kernel for the device)."""
    from harness.evaluation import check_section

    for name, section in eval_cfg.items():
        if section is not None:   # a preset that switches an evaluator off leaves its key at null
            check_section(name, section, data_dir, device)


def _check_output(config: dict, pattern: str) -> None:
    output = config.get("output") or {}
    if output.get("save_model") or output.get("format", "safetensors") != "safetensors":
        from harness.export import check_format

        check_format(output.get("format") or "safetensors", pattern)


def _recovery_and_kv(config: dict, data_dir: Path | None) -> tuple[Any, Any, Any]:
    """The recovery (its budget and corpus checked, never an evaluated text) and the KV policy."""
    from harness.evaluation import evaluated_texts
    from harness.recovery import check_recovery, get_recovery

    recovery_cfg = config.get("recovery") or {"name": "none"}
    recovery = get_recovery(recovery_cfg["name"])
    kv = build_kv_policy(config.get("kv"))
    budget = check_recovery(recovery_cfg, list(evaluated_texts(config.get("eval") or {})), data_dir)
    if kv is not None:
        check_kv_evaluated(kv, config.get("eval") or {})
    return recovery, kv, budget


def default_results_dir() -> Path:
    """Outside the repository, so a run never writes into the committed results/ unasked."""
    return Path.home() / ".local" / "share" / "prunebench" / "results"


def check_kv_evaluated(kv, eval_cfg: dict) -> None:
    """A KV policy whose evaluation never builds a cache would label dense numbers with its name."""
    from harness.evaluation import KV_CACHE_EVALUATORS

    if not any(eval_cfg.get(name) for name in KV_CACHE_EVALUATORS):
        ran = ", ".join(k for k, v in eval_cfg.items() if v) or "none"
        builders = " or ".join(KV_CACHE_EVALUATORS)
        raise ConfigError(f"kv={kv.name} needs an evaluation that builds a KV cache ({builders}, "
                          f"e.g. eval=kv_quick); this eval runs {ran}, which would report dense numbers")


def check_calib_not_eval(calib: dict, eval_cfg: dict) -> None:
    """Calibrating on text that is evaluated inflates the result: refused unless
    calib.allow_eval_split=true (which the record keeps, in its config and calibration)."""
    from harness.data import corpus
    from harness.evaluation import evaluated_texts

    if calib.get("allow_eval_split"):
        return
    name, split = calib.get("corpus"), calib.get("split", "train")
    if (name, split) in evaluated_texts(eval_cfg) or split == corpus(name).eval_split:
        raise ConfigError(f"calib: {name}/{split} is an evaluation split; calibrating on it inflates the "
                          "result (set calib.allow_eval_split=true to do it anyway, recorded)")


def check_lengths(config: dict, uses_calib: bool) -> None:
    """Every sequence length fits the model's max_position_embeddings, read from its config
    (no weights loaded): longer windows run silently wrong or crash after pruning (OPT)."""
    from harness.evaluation import length_keys
    from harness.models import max_positions

    limit = max_positions(config["model"]["source"])
    if not limit:
        return
    keys = [("calib.seq_len", (config.get("calib") or {}).get("seq_len") if uses_calib else None)]
    keys += length_keys(config.get("eval") or {})
    recovery = config.get("recovery") or {}
    if recovery.get("name", "none") != "none":
        keys.append(("recovery.seq_len", recovery.get("seq_len")))
    for key, value in keys:
        if isinstance(value, int) and value > limit:
            raise ConfigError(f"{key}={value} exceeds the model's max_position_embeddings={limit} "
                              f"({config['model'].get('name')})")


def build_kv_policy(kv_cfg: dict | None):
    """The `kv` config group: none, or a registered KV-cache policy (harness.kv.POLICIES)."""
    from harness.kv import POLICIES

    if not kv_cfg or kv_cfg.get("name", "none") == "none":
        return None
    if kv_cfg["name"] not in POLICIES:
        raise ConfigError(f"kv={kv_cfg['name']} is not a KV-cache method: {POLICIES.unknown(kv_cfg['name'])}")
    return POLICIES.build(kv_cfg["name"], kv_cfg.get("params") or {})
