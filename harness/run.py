"""The Hydra app: `python -m harness.run model=... method=... target=... eval=...`.

Straight-line stages: validate -> load -> calibrate -> prune -> recover -> measure -> evaluate ->
record. `main` only calls `run_experiment(cfg)`, which tests call directly. A failure at any stage
leaves a `failed` record naming the stage; an identical config with an `ok` record is skipped.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from harness.env import configure_offline

log = logging.getLogger("prunebench")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def launcher_ids() -> dict:
    """Slurm job / array ids when running under Slurm (submitit sets these)."""
    keys = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
            "slurm_array_task_id": "SLURM_ARRAY_TASK_ID", "slurm_node": "SLURMD_NODENAME"}
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ}


def tokenizer_sha256(tokenizer) -> str | None:
    from harness.hashing import sha256_text

    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    return sha256_text(backend.to_str()) if backend is not None else None


def _run_tags(plan, record: dict) -> dict:
    """The paper's tags for this target (record.method) and the run's own (what ran: pattern, recovery)."""
    from methods.tags import run_tags

    listed, paper = plan.method.paper_entry(plan.target.pattern)
    record["method"].update(tags=paper.as_dict(), listed=listed)
    return run_tags(paper, plan.target.pattern, record["recovery"]["name"],
                    bool(getattr(plan.method, "updates_weights", False)), bool(plan.method.needs_calibration))


def _env_block(device: str) -> dict:
    from harness.env import device_description, git_state, library_versions, lock_state

    return {**device_description(device), "libraries": library_versions(), "git": git_state(), "lock": lock_state(),
            "launcher": launcher_ids(), "hostname": os.uname().nodename}


def run_experiment(cfg) -> dict:
    """Run one grid cell from a composed config; returns the record (also written to disk)."""
    from omegaconf import DictConfig, OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    runtime = config.get("runtime", {})
    configure_offline(runtime.get("offline", True))
    from harness.env import configure_runtime

    threads = configure_runtime(runtime.get("threads"), runtime.get("offline", True))

    from harness.records import existing_status, read_record, record_path, run_id_for, write_record
    from harness.validate import validate

    from harness.identity import IDENTITY_VERSION
    from harness.schema import resolve_seeds

    config = resolve_seeds(config)  # the top-level seed drives calib / recovery unless they pin one
    plan = validate(config)  # ConfigError before anything expensive
    run_id = run_id_for(config)
    from harness.records import ResultsDirError, check_writable

    try:
        check_writable(plan.results_dir)  # a full or read-only disk is found now, not after the work
    except ResultsDirError as exc:
        from harness.validate import ConfigError

        raise ConfigError(str(exc)) from None
    status = existing_status(plan.results_dir, run_id)
    retry_failed = bool(config.get("retry_failed", True))
    if not config.get("force") and (status == "ok" or (status == "failed" and not retry_failed)):
        log.info("skip %s: record exists with status %s", run_id, status)
        return read_record(record_path(plan.results_dir, run_id))

    t_start = time.perf_counter()
    record: dict = {
        "run_id": run_id, "identity_version": IDENTITY_VERSION, "status": "failed", "error": None,
        "method": plan.method.describe(),
        "model": {"name": config["model"]["name"], "source": config["model"]["source"]},
        "target": plan.target.describe(),
        "allocator": config.get("allocator"),
        "kv": plan.kv.describe() if plan.kv is not None else {"name": "none"},
        "calibration": None, "recovery": {"name": (config.get("recovery") or {}).get("name", "none")},
        "measured": {}, "metrics": {}, "timing": {}, "memory": {}, "prune_report": {},
        "env": _env_block(plan.device) | {"threads": threads, "dtype": str(plan.dtype)},
        "provenance": {}, "config": config,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record["tags"] = _run_tags(plan, record)
    stage = "load"
    try:
        record = _run_stages(config, plan, record)
    except BaseException as exc:  # noqa: BLE001 - a failed cell must always leave a record
        stage = record.get("_stage", stage)
        record["status"] = "failed"
        record["error"] = {"stage": stage, "type": type(exc).__name__, "message": str(exc)[:2000],
                           "traceback": traceback.format_exc()[-8000:]}
        log.error("run %s failed at stage %s: %s: %s", run_id, stage, type(exc).__name__, exc)
        if isinstance(exc, KeyboardInterrupt):
            _finish(record, plan, t_start)
            raise
    _finish(record, plan, t_start)
    from harness.tracking import track_run

    track_run(config, record)  # W&B (offline by default); never fails the run
    return record


def _finish(record: dict, plan, t_start: float) -> None:
    from harness.records import write_record

    record.pop("_stage", None)
    record["timing"]["total_s"] = time.perf_counter() - t_start
    record["memory"]["peak_rss_bytes"] = _peak_rss_bytes()
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        path = write_record(plan.results_dir, record)
    except OSError as exc:
        # The disk filled up or went away during the run: the numbers must not be lost.
        from harness.records import fallback_dir

        path = write_record(fallback_dir(), record)
        print(f"prunebench: could not write the record to {plan.results_dir} ({exc.strerror or exc}); "
              f"written to {path} instead. metrics: {record.get('metrics')}", file=sys.stderr)
    log.info("record %s (%s) -> %s", record["run_id"], record["status"], path)


def _run_stages(config: dict, plan, record: dict) -> dict:
    import torch

    from harness.blocks.context import PruneContext
    from harness.blocks.measure import measure_sparsity
    from harness.calibration import sample_calibration
    from harness.evaluation import get_evaluator
    from harness.evaluation.context import EvalContext
    from harness.models import load_model
    from harness.adapters import adapter_for

    timing = record["timing"]
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)

    record["_stage"] = "load"
    model_cfg = config["model"]
    loaded = load_model(model_cfg["name"], model_cfg["source"], plan.dtype, plan.device, plan.cache_dir,
                        allow_pickle=bool(model_cfg.get("allow_pickle", False)), seed=seed,
                        **_offload_arguments(config, plan))
    model, tokenizer = loaded.model, loaded.tokenizer
    _record_offload(record, loaded, plan)
    if loaded.residency is not None:   # disk offload: pruned blocks are staged next to the output
        loaded.residency.staging = plan.results_dir / "models" / f".{record['run_id']}.staging"
    timing["load_s"] = loaded.load_s
    record["provenance"].update({"model_sha256": loaded.sha256, "model_cache_hit": loaded.cache_hit,
                                 "tokenizer_sha256": tokenizer_sha256(tokenizer), "data_sha256": {}})
    adapter = adapter_for(model, model_cfg.get("adapter"))
    record["model"]["family"] = adapter.family
    record["model"]["model_type"] = model.config.model_type

    prune_cfg = config.get("prune", {})
    ctx = PruneContext(adapter=adapter, target=plan.target, calibration=None, allocator=plan.allocator,
                       device=plan.device, batch_size=int(prune_cfg.get("batch_size", 1)),
                       propagation=prune_cfg.get("propagation", "pruned"), seed=seed,
                       tokenizer=tokenizer, cache_dir=plan.cache_dir, model_sha256=loaded.sha256,
                       reuse=bool(prune_cfg.get("reuse", True)))
    record["_stage"] = "check"
    plan.method.check(model, ctx)

    record["_stage"] = "calibrate"
    t = time.perf_counter()
    if plan.method.needs_calibration or getattr(plan.allocator, "needs_calibration", False):
        c = config["calib"]
        calib = sample_calibration(tokenizer, c["corpus"], c.get("split", "train"), int(c["n_samples"]),
                                   int(c["seq_len"]), int(c["seed"] if c.get("seed") is not None else seed),
                                   plan.data_dir,
                                   c.get("mode", "reference"),
                                   cache_dir=plan.cache_dir if prune_cfg.get("reuse", True) else None)
        ctx.calibration = calib
        record["calibration"] = calib.describe() | {"allow_eval_split": bool(c.get("allow_eval_split", False))}
        record["provenance"]["calibration_tokens_sha256"] = calib.tokens_sha256
        record["provenance"]["data_sha256"][f"calib:{calib.corpus}/{calib.split}"] = calib.data_sha256
    timing["calibrate_s"] = time.perf_counter() - t

    record["_stage"] = "prune"
    t = time.perf_counter()
    if not plan.method.streams_blocks:
        _materialize(loaded, f"method {plan.method.name} works on the whole model", config, record)
    params_before = sum(p.numel() for p in model.parameters())
    record["prune_report"] = plan.method.prune(model, ctx) or {}
    timing["prune_s"] = time.perf_counter() - t

    record["_stage"] = "recover"
    t = time.perf_counter()
    if plan.recovery is not None:
        from harness.recovery.context import recovery_context

        _materialize(loaded, f"recovery {config['recovery'].get('name')} trains the whole model", config, record)
        rctx = recovery_context(config, plan, ctx, record)
        record["recovery"].update(plan.recovery(model, tokenizer, config["recovery"], rctx) or {})
    timing["recover_s"] = time.perf_counter() - t

    if loaded.residency is not None and loaded.residency.mode == "disk":
        record["_stage"] = "save"   # the pruned model is written as sharded safetensors, block by block
        out = plan.results_dir / "models" / record["run_id"]
        loaded.residency.finalize(out)
        tokenizer.save_pretrained(out)
        record["output"] = {"model_dir": str(out)}

    record["_stage"] = "measure"
    target = plan.target
    record["measured"] = measure_sparsity(model, adapter, target.n, target.m)
    record["measured"]["params_before"] = params_before
    record["measured"]["params_after"] = sum(p.numel() for p in model.parameters())

    record["_stage"] = "evaluate"
    t = time.perf_counter()
    ectx = EvalContext(device=plan.device, data_dir=plan.data_dir,
                       run_dir=plan.results_dir / "records", run_id=record["run_id"], seed=seed,
                       threads=record["env"]["threads"], extras={"kv": plan.kv, "cache_dir": plan.cache_dir})
    for name, section in (config.get("eval") or {}).items():
        if section is None:
            continue
        result = get_evaluator(name)(model, tokenizer, section, ectx)
        record["metrics"].update(result)
    for name, r in record["metrics"].get("ppl", {}).items():
        record["provenance"]["data_sha256"][f"eval:{name}/{r['split']}"] = r["data_sha256"]
    timing["eval_s"] = time.perf_counter() - t
    if plan.device.startswith("cuda"):
        record["memory"]["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    if (config.get("output") or {}).get("save_model") and "output" not in record:
        record["_stage"] = "save"
        out = plan.results_dir / "models" / record["run_id"]
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        record["output"] = {"model_dir": str(out)}
    record["status"] = "ok"
    return record


def _offload_arguments(config: dict, plan) -> dict:
    """load_model's offload arguments from `runtime` (harness.offload)."""
    runtime = config.get("runtime", {})
    calib = config.get("calib") or {}
    tokens = int(calib.get("n_samples", 0)) * int(calib.get("seq_len", 0)) if plan.method.needs_calibration else 0
    max_gb = runtime.get("max_memory_gb")
    ppl = (config.get("eval") or {}).get("ppl") or {}
    eval_tokens = int(ppl.get("seq_len", 0)) * int(ppl.get("batch_size", 1))
    return {"offload": runtime.get("offload", "auto"), "max_memory_gb": float(max_gb) if max_gb else None,
            "eval_tokens": eval_tokens,
            "dtype_is_auto": runtime.get("dtype", "auto") == "auto", "calib_tokens": tokens,
            "hessian": "hessian" in getattr(plan.method, "statistics", ())}


def _record_offload(record: dict, loaded, plan) -> None:
    """Which offload mode ran, the dtypes, and the predicted peaks it was chosen from."""
    residency = loaded.residency
    mode = residency.mode if residency is not None else "none"
    record["memory"]["offload"] = mode
    record["memory"]["device"] = plan.device
    if residency is not None:
        record["memory"].update({k: v for k, v in residency.describe().items() if k != "mode"})
    record["memory"]["predicted"] = {k: v for k, v in loaded.offload_plan.items() if k.endswith("bytes")}
    record["env"]["dtype"] = str(loaded.dtype)


def _materialize(loaded, reason: str, config: dict, record: dict) -> None:
    """Code that needs every weight at once gets the whole model on the host (disk offload), or a
    one-line MemoryError naming the budget when it cannot fit."""
    residency = loaded.residency
    if residency is None or not residency.streaming:
        return
    max_gb = (config.get("runtime") or {}).get("max_memory_gb")
    from harness.offload import available_bytes

    residency.materialize(reason, int(float(max_gb) * 1e9) if max_gb else available_bytes("cpu"))
    record["memory"]["materialized"] = reason


def model_dir_arguments(argv: list[str]) -> list[str]:
    """`model=<directory>` (a local HF-layout model) -> the `local_dir` model preset pointing at it."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key == "model" and sep and ("/" in value or value.startswith(".")) and Path(value).expanduser().is_dir():
            path = Path(value).expanduser().resolve()
            out += ["model=local_dir", f"model.source.path={path}", f"model.name={path.name}"]
        else:
            out.append(arg)
    return out


def check_group_choices(argv: list[str], conf_dir: Path) -> str | None:
    """Hydra reports an unknown group option (`method=wandaa`) with a multi-line listing; check
    the command line's group choices first so the user gets one line with near matches."""
    import difflib

    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        group_dir = conf_dir / key
        if not sep or "." in key or not group_dir.is_dir() or "," in value or "(" in value:
            continue
        options = sorted(p.stem for p in group_dir.glob("*.yaml"))
        if value not in options:
            near = difflib.get_close_matches(value, options, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            return f"unknown {key} {value!r}{hint} (available: {', '.join(options)})"
    return None


def check_results_dir(argv: list[str]) -> str | None:
    """Hydra creates its log folder under paths.results_dir before the app runs, and reports an
    unwritable one with a traceback: check the composed results dir first (single runs only)."""
    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        return None
    from harness.records import ResultsDirError, check_writable

    try:
        from harness.config import compose_config

        results_dir = compose_config([a for a in argv if "=" in a]).paths.results_dir
    except Exception:  # noqa: BLE001 - a config that does not compose is Hydra's to report
        return None
    try:
        check_writable(Path(str(results_dir)).expanduser())
    except ResultsDirError as exc:
        return str(exc)
    return None


def main() -> None:
    import hydra

    configure_offline(os.environ.get("PRUNEBENCH_ONLINE") != "1")
    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    sys.argv[1:] = model_dir_arguments(sys.argv[1:])
    problem = check_group_choices(sys.argv[1:], conf_dir) or check_results_dir(sys.argv[1:])
    if problem:
        print(f"prunebench: config error: {problem}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(config_path=str(conf_dir), config_name="config",
                version_base="1.3")
    def _app(cfg) -> None:
        from harness.validate import ConfigError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        try:
            record = run_experiment(cfg)
        except ConfigError as exc:
            print(f"prunebench: config error: {exc}", file=sys.stderr)
            if HydraConfig.get().mode == RunMode.MULTIRUN:  # a grid cell that cannot run (dense x 2:4)
                return
            sys.exit(2)
        summary = {k: round(v["value"], 4) for k, v in record["metrics"].get("ppl", {}).items()}
        print(f"prunebench: {record['run_id']} {record['status']} ppl={summary} "
              f"sparsity_blocks={record['measured'].get('sparsity_blocks')}")
        if record["status"] == "failed":
            if HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep goes on; it reports at the end
                sys.exit(1)

    _app()


if __name__ == "__main__":
    main()
