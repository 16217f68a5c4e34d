"""The Hydra app: `python -m harness.run model=... method=... target=... eval=...`.

validate -> stages (load, check, calibrate, prune, recover, measure, evaluate, save) -> record.
Each stage is a function that stores its typed result on a `RunState`; one loop runs them in order,
times them and names the one that fails; `assemble_record` builds the record once from the results.
`main` only calls `run_experiment(cfg)`, which tests call directly. A failure at any stage leaves a
`failed` record naming the stage; an identical config with an `ok` record is skipped.
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.env import configure_offline, offline_from_argv

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


def _run_tags(plan, method_description: dict, recovery_name: str) -> dict:
    """The paper's tags for this target (into the method's description) and the run's own (what
    ran: pattern, recovery)."""
    from harness.tags import run_tags

    listed, paper = plan.method.paper_entry(plan.target.pattern)
    method_description.update(tags=paper.as_dict(), listed=listed)
    uses_data = getattr(plan.method, "uses_data", plan.method.needs_calibration)   # own sample rows count
    return run_tags(paper, plan.target.pattern, recovery_name,
                    bool(getattr(plan.method, "updates_weights", False)), bool(uses_data),
                    getattr(plan.method, "own_training", None))


def _env_block(device: str) -> dict:
    from harness.env import device_description, git_state, library_versions, lock_state

    return {**device_description(device), "libraries": library_versions(), "git": git_state(), "lock": lock_state(),
            "launcher": launcher_ids(), "hostname": os.uname().nodename}


STAGES = ("load", "check", "calibrate", "prune", "recover", "save_offloaded", "measure", "evaluate", "save")
STAGE_NAMES = {"save_offloaded": "save"}    # the name a failure reports
# stage -> its key in record["timing"] (load times itself: the loader's own clock)
TIMED = {"calibrate": "calibrate_s", "prune": "prune_s", "recover": "recover_s", "evaluate": "eval_s"}


@dataclass
class LoadResult:
    loaded: Any                         # harness.models.LoadedModel
    adapter: Any                        # harness.adapters.Adapter
    tokenizer_sha256: str | None


@dataclass
class Measurement:
    sparsity: dict                      # measure_sparsity(): per-block and total sparsity, N:M check
    params_before: int
    params_after: int
    quant: dict | None = None           # harness.quant.measure_bits(): bits per weight of a quantised model

    def as_record(self) -> dict:
        out = {**self.sparsity, "params_before": self.params_before, "params_after": self.params_after}
        if self.quant is not None:      # only quantised models carry it: other records stay as they were
            out |= {"bits_per_weight": self.quant["bits_per_weight"], "quant": self.quant}
        return out


@dataclass
class RunState:
    """The typed results of the stages so far; the record is assembled from it once, at the end."""
    run_id: str
    seed: int
    threads: int
    load: LoadResult | None = None
    ctx: Any = None                     # harness.blocks.context.PruneContext
    calibration: Any = None             # harness.calibration.Calibration, or None when not needed
    params_before: int | None = None
    prune_report: dict | None = None
    recovery_report: dict = field(default_factory=dict)
    measurement: Measurement | None = None
    metrics: dict = field(default_factory=dict)     # filled evaluator by evaluator (partial on failure)
    declarations: dict = field(default_factory=dict)  # section -> its metric declaration, beside metrics
    output: dict | None = None
    timing: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)      # offload mode and predicted peaks, then measured peaks
    env: dict = field(default_factory=dict)         # the run's environment (the loader settles its dtype)


def _plain_config(cfg) -> dict:
    """The composed config as a plain dict, the model named (model=hf: the hub id)."""
    from omegaconf import DictConfig, OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if isinstance(config.get("model"), dict) and not config["model"].get("name"):
        from harness.config import model_name

        config["model"]["name"] = model_name(config["model"])  # model=hf: the hub id
    return config


def _describe(plan) -> dict:
    """Identity version, method, target, KV policy and tags of the run, described before any stage
    runs: a method's describe() must not see what pruning did."""
    from harness.identity import IDENTITY_VERSION

    described = {"identity_version": IDENTITY_VERSION, "method": plan.method.describe(),
                 "target": plan.target.describe(),
                 "kv": plan.kv.describe() if plan.kv is not None else {"name": "none"}}
    described["tags"] = _run_tags(plan, described["method"], plan.recovery_plan.name)
    return described


def _stage_error(failed: "_StageFailed", run_id: str) -> tuple[dict, KeyboardInterrupt | None]:
    """The record's error for a failed stage, and the interrupt to re-raise once the record is written."""
    exc = failed.__cause__
    log.error("run %s failed at stage %s: %s: %s", run_id, failed.stage, type(exc).__name__, exc)
    error = {"stage": failed.stage, "type": type(exc).__name__, "message": str(exc)[:2000],
             "traceback": failed.traceback}
    return error, (exc if isinstance(exc, KeyboardInterrupt) else None)


def _finished_record(config: dict, plan, state: RunState, described: dict, error: dict | None, started_at: str,
                   pruning_id: str) -> dict:
    """The record with its pruning identity and the source as loaded; a saved model gets its card."""
    record = assemble_record(config, plan, state, described, error, started_at)
    record = {"run_id": record["run_id"], "pruning_id": pruning_id, **record}
    if state.load is not None:
        record["model"]["source"] = state.load.loaded.source  # a hub branch resolved to its commit sha
    if record.get("output") and not error:  # the model card and metadata need the finished record
        from harness.export import write_card

        write_card(Path(record["output"]["model_dir"]), record,
                   {k: v for k, v in record["output"].items() if k != "model_dir"})
    return record


def run_experiment(cfg) -> dict:
    """Run one grid cell from a composed config; returns the record (also written to disk)."""
    config = _plain_config(cfg)
    runtime = config.get("runtime", {})
    configure_offline(runtime.get("offline", True))
    from harness.env import configure_runtime

    threads = configure_runtime(runtime.get("threads"), runtime.get("offline", True))

    from harness.records import check_writable, existing_status, pruning_id_for, read_record, record_path, run_id_for
    from harness.schema import resolve_seeds
    from harness.tracking import start_run, track_run
    from harness.validate import validate

    config = resolve_seeds(config)  # the top-level seed drives calib / recovery unless they pin one
    plan = validate(config)  # ConfigError before anything expensive
    run_id = run_id_for(config, plan.param_defaults)
    check_writable(plan.results_dir)  # a full or read-only disk is found now, not after the work (ConfigError)
    status = existing_status(plan.results_dir, run_id)
    if not plan.force and (status == "ok" or (status == "failed" and not plan.retry_failed)):
        log.info("skip %s: record exists with status %s", run_id, status)
        return read_record(record_path(plan.results_dir, run_id))

    t_start = time.perf_counter()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state = RunState(run_id=run_id, seed=plan.seed, threads=threads,
                     env=_env_block(plan.device) | {"threads": threads, "dtype": str(plan.dtype)})
    described = _describe(plan)
    pruning_id = pruning_id_for(config, plan.param_defaults)
    # W&B open while the stages work: where and under which name from the plan, the config only logged
    live = start_run(plan.tracking, plan.seed, config,
                     {"run_id": run_id, "pruning_id": pruning_id, **described, "model": {"name": plan.model.name}})
    error, interrupted = None, None
    try:
        _run_stages(plan, state)  # the stages read the typed plan, never the raw config
    except _StageFailed as failed:  # a failed cell must always leave a record
        error, interrupted = _stage_error(failed, run_id)
    record = _finished_record(config, plan, state, described, error, started_at, pruning_id)
    _finish(record, plan, t_start)
    track_run(plan.tracking, plan.seed, config, record, live)  # W&B (offline by default); never fails the run
    if interrupted is not None:
        raise interrupted
    return record


class _StageFailed(Exception):
    def __init__(self, stage: str, traceback_text: str):
        super().__init__(stage)
        self.stage, self.traceback = stage, traceback_text


def _run_stages(plan, state: RunState) -> None:
    """Run the stages in order, timing each; a failure is re-raised as _StageFailed naming it."""
    import torch

    torch.manual_seed(state.seed)
    stages = {"load": _load, "check": _check, "calibrate": _calibrate, "prune": _prune, "recover": _recover,
              "save_offloaded": _save_offloaded, "measure": _measure, "evaluate": _evaluate, "save": _save}
    from harness.progress import stage as progress_stage

    for name in STAGES:
        if name not in ("save_offloaded", "save") or _saves(plan, name, state):
            progress_stage(STAGE_NAMES.get(name, name))
        t = time.perf_counter()
        try:
            stages[name](plan, state)
        except BaseException as exc:  # noqa: BLE001 - named, recorded, and re-raised if an interrupt
            raise _StageFailed(STAGE_NAMES.get(name, name), traceback.format_exc()[-8000:]) from exc
        if name in TIMED:
            state.timing[TIMED[name]] = time.perf_counter() - t
        elif name == "load":
            state.timing["load_s"] = state.load.loaded.load_s


def _saves(plan, name: str, state: RunState) -> bool:
    """Whether a save stage has work (only then is it announced)."""
    if name == "save":
        return plan.output.save_model and state.output is None
    residency = state.load.loaded.residency if state.load is not None else None
    return residency is not None and residency.mode == "disk"


# ------------------------------------------------------------------------------------------ stages
def _load(plan, state: RunState) -> None:
    from harness.adapters import adapter_for
    from harness.blocks.context import PruneContext
    from harness.models import load_model

    model = plan.model
    loaded = load_model(model.name, model.source, plan.dtype, plan.device, plan.cache_dir,
                        allow_pickle=model.allow_pickle, seed=state.seed,
                        adapter_override=model.adapter, **_offload_arguments(plan))
    _record_offload(state.memory, state.env, loaded, plan)
    if loaded.residency is not None:   # disk offload: pruned blocks are staged next to the output
        loaded.residency.staging = plan.results_dir / "models" / f".{state.run_id}.staging"
    from harness.quant import apply_saved_quant

    apply_saved_quant(loaded.model)   # a saved ternary model (model=local): its 8-bit activation hooks
    adapter = adapter_for(loaded.model)
    state.load = LoadResult(loaded, adapter, tokenizer_sha256(loaded.tokenizer))
    state.ctx = PruneContext(adapter=adapter, target=plan.target, calibration=None, allocator=plan.allocator,
                             device=plan.device, batch_size=plan.prune.batch_size,
                             propagation=plan.prune.propagation, seed=state.seed,
                             tokenizer=loaded.tokenizer, cache_dir=plan.cache_dir, model_sha256=loaded.sha256,
                             reuse=plan.prune.reuse, data_dir=plan.data_dir, devices=plan.runtime.devices,
                             checkpoint_dir=plan.prune.checkpoint_dir)


def _check(plan, state: RunState) -> None:
    plan.method.check(state.load.loaded.model, state.ctx)


def _calibrate(plan, state: RunState) -> None:
    from harness.calibration import sample_calibration

    if not (plan.method.needs_calibration or getattr(plan.allocator, "needs_calibration", False)):
        return
    c = plan.calib
    state.calibration = sample_calibration(state.load.loaded.tokenizer, c.corpus, c.split, c.n_samples, c.seq_len,
                                           c.seed if c.seed is not None else state.seed, plan.data_dir, c.mode,
                                           cache_dir=plan.cache_dir if plan.prune.reuse else None)
    state.ctx.calibration = state.calibration


def _prune(plan, state: RunState) -> None:
    if not plan.method.streams_blocks:
        _materialize(state.load.loaded, f"method {plan.method.name} works on the whole model", plan, state.memory)
    state.params_before = sum(p.numel() for p in state.load.loaded.model.parameters())
    _evaluate_dense(plan, state)
    state.prune_report = plan.method.prune(state.load.loaded.model, state.ctx) or {}


def _recover(plan, state: RunState) -> None:
    if plan.recovery is None:
        return
    from harness.recovery.context import recovery_context

    _materialize(state.load.loaded, f"recovery {plan.recovery_plan.name} trains the whole model", plan,
                 state.memory)
    rctx = recovery_context(plan, state.ctx, state.run_id, state.load.loaded.sha256, state.prune_report)
    loaded = state.load.loaded
    state.recovery_report = plan.recovery(loaded.model, loaded.tokenizer, plan.recovery_plan.section(), rctx) or {}


def _save_offloaded(plan, state: RunState) -> None:
    """Disk offload: the pruned model is written as sharded safetensors, block by block."""
    residency = state.load.loaded.residency
    if residency is None or residency.mode != "disk":
        return
    out = plan.results_dir / "models" / state.run_id
    residency.finalize(out)
    state.load.loaded.tokenizer.save_pretrained(out)
    state.output = {"model_dir": str(out), "format": "safetensors"}


def _measure(plan, state: RunState) -> None:
    from harness.blocks.measure import measure_sparsity
    from harness.quant import check_bits, measure_bits

    model = state.load.loaded.model
    quant = measure_bits(model, state.load.adapter)
    check_bits(quant, plan.target.bits)   # a target asking for bits is met on the stored weights, or the run fails
    state.measurement = Measurement(measure_sparsity(model, state.load.adapter, plan.target.n, plan.target.m),
                                    state.params_before, sum(p.numel() for p in model.parameters()), quant)


def _eval_context(plan, state: RunState):
    from harness.evaluation.context import EvalContext

    return EvalContext(device=plan.device, data_dir=plan.data_dir, run_dir=plan.results_dir / "records",
                       run_id=state.run_id, seed=state.seed, threads=state.threads,
                       kv=plan.kv, cache_dir=plan.cache_dir)


def dense_baseline_declaration(declaration: dict) -> dict:
    """An evaluator's declaration for its score of the model before pruning: the same metrics,
    named and headed "(dense)", never headline (the pruned model's score is)."""
    declaration = copy.deepcopy(declaration)
    for metric in declaration.get("metrics", []):
        metric.update(name=f"{metric['name']} (dense)", header=f"{metric['header']} (dense)", headline=False)
    return declaration


def _evaluate_dense(plan, state: RunState) -> None:
    """Eval sections with `dense_baseline: true` also score the model before pruning, stored as
    `<section>_dense` (declared, not headline), so one record holds the numbers before and after."""
    from harness.evaluation import get_evaluator

    t = time.perf_counter()
    loaded = state.load.loaded
    for name, section in plan.evals:
        if isinstance(section, dict) and section.get("dense_baseline"):
            out = get_evaluator(name)(loaded.model, loaded.tokenizer, section, _eval_context(plan, state))
            state.metrics[f"{out.section}_dense"] = out.values
            state.declarations[f"{out.section}_dense"] = dense_baseline_declaration(out.declaration)
            state.timing["eval_dense_s"] = time.perf_counter() - t


def _evaluate(plan, state: RunState) -> None:
    import torch

    from harness.evaluation import get_evaluator

    ectx = _eval_context(plan, state)
    loaded = state.load.loaded
    for name, section in plan.evals:
        out = get_evaluator(name)(loaded.model, loaded.tokenizer, section, ectx)
        state.metrics[out.section] = out.values
        state.declarations[out.section] = out.declaration
    if plan.device.startswith("cuda"):
        state.memory["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()


def _save(plan, state: RunState) -> None:
    if not plan.output.save_model or state.output is not None:
        return
    from harness.export import save_weights

    sparsity = state.measurement.as_record().get("sparsity_blocks") if state.measurement is not None else 0.0
    state.output = save_weights(state.load.loaded.model, state.load.loaded.tokenizer,
                                plan.results_dir / "models" / state.run_id, plan.target.describe(),
                                float(sparsity or 0.0), plan.output.format, state.load.adapter)


# ------------------------------------------------------------------------------------------ record
def assemble_record(config: dict, plan, state: RunState, described: dict, error: dict | None,
                    started_at: str) -> dict:
    """The run record, built once from the stage results (those that ran: a failed run keeps them);
    `config` is recorded as resolved, the rest comes from the typed plan and the stage results."""
    load, calib = state.load, state.calibration
    model = {"name": plan.model.name, "source": copy.deepcopy(plan.model.source)}
    provenance: dict = {}
    if load is not None:
        model |= {"family": load.adapter.family, "model_type": load.loaded.model.config.model_type}
        provenance = {"model_sha256": load.loaded.sha256, "model_cache_hit": load.loaded.cache_hit,
                      "tokenizer_sha256": load.tokenizer_sha256, "data_sha256": {}}
    if calib is not None:
        provenance["calibration_tokens_sha256"] = calib.tokens_sha256
        provenance["data_sha256"][f"calib:{calib.corpus}/{calib.split}"] = calib.data_sha256
    if "eval_s" in state.timing:
        for name, r in state.metrics.get("ppl", {}).items():
            provenance["data_sha256"][f"eval:{name}/{r['split']}"] = r["data_sha256"]
    record = {
        "run_id": state.run_id, "identity_version": described["identity_version"],
        "status": "failed" if error else "ok", "error": error,
        "method": described["method"], "model": model, "target": described["target"],
        "allocator": config.get("allocator"), "kv": described["kv"],
        "calibration": (calib.describe() | {"allow_eval_split": plan.calib.allow_eval_split}
                        if calib is not None else None),
        "recovery": {"name": plan.recovery_plan.name, **state.recovery_report},
        "measured": state.measurement.as_record() if state.measurement is not None else {},
        "metrics": state.metrics, "metric_declarations": state.declarations,
        "timing": dict(state.timing), "memory": dict(state.memory),
        "prune_report": state.prune_report or {}, "env": state.env, "provenance": provenance, "config": config,
        "started_at": started_at, "tags": described["tags"],
    }
    if state.output is not None:
        record["output"] = state.output
    return record


def _finish(record: dict, plan, t_start: float) -> None:
    from harness.records import path_roots, write_record

    record["timing"]["total_s"] = time.perf_counter() - t_start
    record["memory"]["peak_rss_bytes"] = _peak_rss_bytes()
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    roots = path_roots(dict(plan.dirs))
    try:
        path = write_record(plan.results_dir, record, roots)
    except OSError as exc:
        # The disk filled up or went away during the run: the numbers must not be lost.
        from harness.records import fallback_dir

        path = write_record(fallback_dir(), record, roots)
        print(f"prunebench: could not write the record to {plan.results_dir} ({exc.strerror or exc}); "
              f"written to {path} instead. metrics: {record.get('metrics')}", file=sys.stderr)
    log.info("record %s (%s) -> %s", record["run_id"], record["status"], path)


def _offload_arguments(plan) -> dict:
    """load_model's offload arguments from `runtime` (harness.offload)."""
    tokens = plan.calib.n_samples * plan.calib.seq_len if plan.method.needs_calibration else 0
    ppl = dict(plan.evals).get("ppl") or {}
    eval_tokens = int(ppl.get("seq_len", 0)) * int(ppl.get("batch_size", 1))
    return {"offload": plan.runtime.offload, "max_memory_gb": plan.runtime.max_memory_gb,
            "eval_tokens": eval_tokens,
            "dtype_is_auto": plan.runtime.dtype == "auto", "calib_tokens": tokens,
            "hessian": "hessian" in getattr(plan.method, "statistics", ())}


def _record_offload(memory: dict, env: dict, loaded, plan) -> None:
    """Which offload mode ran, the dtypes, and the predicted peaks it was chosen from."""
    residency = loaded.residency
    mode = residency.mode if residency is not None else "none"
    memory["offload"] = mode
    memory["device"] = plan.device
    if residency is not None:
        memory.update({k: v for k, v in residency.describe().items() if k != "mode"})
    memory["predicted"] = {k: v for k, v in loaded.offload_plan.items() if k.endswith("bytes")}
    env["dtype"] = str(loaded.dtype)


def _materialize(loaded, reason: str, plan, memory: dict) -> None:
    """Code that needs every weight at once gets the whole model on the host (disk offload), or a
    one-line MemoryError naming the budget when it cannot fit."""
    residency = loaded.residency
    if residency is None or not residency.streaming:
        return
    max_gb = plan.runtime.max_memory_gb
    from harness.offload import available_bytes

    residency.materialize(reason, int(max_gb * 1e9) if max_gb else available_bytes("cpu"))
    memory["materialized"] = reason


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


def check_group_choices(argv: list[str], conf_dir: Path | None = None) -> str | None:
    """One-line error for a group option that exists nowhere (harness.config.check_group_choices)."""
    from harness.config import check_group_choices as check

    return check(argv)


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

    configure_offline(offline_from_argv(sys.argv[1:]))
    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    sys.argv[1:] = model_dir_arguments(sys.argv[1:])
    problem = check_group_choices(sys.argv[1:]) or check_results_dir(sys.argv[1:])
    if problem:
        print(f"prunebench: config error: {problem}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(config_path=str(conf_dir), config_name="config",
                version_base="1.3")
    def _app(cfg) -> None:
        from harness.errors import ConfigError

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
