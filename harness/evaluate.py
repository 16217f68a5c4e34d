"""Evaluate a pruned model again without pruning it again.

usage: python -m harness.evaluate <record.json | saved model dir> eval=<preset> [key=value ...]

  <record.json>     a run's record; its saved model (output.model_dir, from output.save_model=true)
                    is loaded. When the run saved no model, the run is repeated with the new eval
                    and output.save_model=true (the log says so: calibration and pruning run again)
  <saved model dir> <results_dir>/models/<run_id> (holds pruning_metadata.json)
  eval=<preset>     any conf/eval preset or list: eval=zeroshot_quick, eval=[quick,latency_quick]
  key=value         runtime.threads=1, paths.results_dir=..., eval.ppl.max_windows=4, force=true, ...

Writes a linked record: the source run's config with the new `eval` section, hence a new run_id
(the evaluation identity), the same pruning_id (the pruned model's identity: the leaderboard joins
the two records on it), and `evaluated_from` = {run_id, model_dir}. Method, target, calibration
and prune report are the source record's; the stages run are load, measure and evaluate only.
Exit status: 0 ok, 1 failed record, 2 bad input (one line).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path

from harness.errors import ConfigError

log = logging.getLogger("prunebench.evaluate")


class EvaluateError(ConfigError):
    """Bad input to harness.evaluate (one line)."""


def source_of(path: str | Path) -> tuple[dict, Path | None]:
    """(source record or metadata, saved model dir or None) for a record file or a saved model dir."""
    from harness.export import is_saved_model, read_metadata
    from harness.records import read_record

    path = Path(path).expanduser().resolve()
    if path.is_dir():
        if not is_saved_model(path):
            raise EvaluateError(f"{path} is not a saved prunebench model (no pruning_metadata.json)")
        meta = read_metadata(path)
        records = path.parent.parent / "records" / f"{meta['run_id']}.json"   # <results>/models/<run_id>
        if records.is_file():  # the full record when it is still there
            return read_record(records), path
        return meta | {"model": meta.get("base_model")}, path
    if not path.is_file():
        raise EvaluateError(f"{path}: no such record or saved model directory")
    try:
        record = read_record(path)
    except (OSError, ValueError) as exc:
        raise EvaluateError(f"{path}: not a readable record ({exc})") from None
    if record["status"] != "ok":
        raise EvaluateError(f"{path}: record status is {record['status']}, not ok; re-run it first")
    # records keep paths portable: <results_dir> is the folder holding records/
    raw = str((record.get("output") or {}).get("model_dir") or "/nonexistent")
    model_dir = Path(raw.replace("<results_dir>", str(path.parent.parent)))
    return record, (model_dir if is_saved_model(model_dir) else None)


def new_config(source: dict, overrides: list[str], results_dir: Path | None = None) -> dict:
    """The source run's config with the eval preset (and any other override) of the command line.
    Paths are this machine's (records store them as placeholders); results go beside the source
    record unless paths.results_dir is given."""
    from omegaconf import OmegaConf

    from harness.config import compose_config

    config = copy.deepcopy(source["config"])
    presets = [o for o in overrides if o.split("=", 1)[0].lstrip("+") == "eval"]
    if not presets:
        raise EvaluateError("eval=<preset> is required (e.g. eval=zeroshot_quick or eval=[quick,latency_quick])")
    composed = OmegaConf.to_container(compose_config(presets), resolve=True)
    config["eval"] = composed["eval"]
    config["paths"] = composed["paths"]
    if results_dir is not None:
        config["paths"]["results_dir"] = str(results_dir)
    dotted = [o for o in overrides if o not in presets]
    if dotted:
        merged = OmegaConf.merge(OmegaConf.create(config), OmegaConf.from_dotlist(dotted))
        config = OmegaConf.to_container(merged, resolve=True)
    config.setdefault("output", {})["save_model"] = False  # the model is already saved
    return config


def _linked_record(source: dict, model_dir: Path, config: dict, plan, run_id: str, threads: int) -> dict:
    """The evaluation's record before any stage: the source's method, target, calibration and prune
    report, `evaluated_from` the source, status failed until the evaluation finishes. Raises
    EvaluateError when the config changes the pruned model's identity."""
    from harness.records import pruning_id_for
    from harness.run import _env_block

    record = {
        "run_id": run_id, "pruning_id": pruning_id_for(config, plan.param_defaults), "status": "failed", "error": None,
        "evaluated_from": {"run_id": source.get("run_id"), "model_dir": str(model_dir)},
        **{k: copy.deepcopy(source.get(k)) for k in ("method", "model", "target", "allocator", "kv",
                                                     "calibration", "recovery", "prune_report")},
        "measured": {}, "metrics": {}, "metric_declarations": {}, "timing": {}, "memory": {},
        "env": _env_block(plan.device) | {"threads": threads, "dtype": str(plan.dtype)},
        "provenance": copy.deepcopy(source.get("provenance") or {}), "config": config,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    source_pid = source.get("pruning_id") or pruning_id_for(source["config"])  # records older than pruning_id
    if record["pruning_id"] != source_pid:
        raise EvaluateError(f"pruning identity changed ({source_pid} -> {record['pruning_id']}): "
                            f"only eval, output, paths and wandb settings may differ from the source run")
    return record


def _evaluation_stages(record: dict, model_dir: Path, plan, run_id: str, threads: int) -> dict | None:
    """Load, measure and evaluate the saved model into `record` (filled as far as the stages got).
    Returns the error naming the stage that failed, or None when all ran."""
    import torch

    from harness.adapters import adapter_for
    from harness.blocks.measure import measure_sparsity
    from harness.evaluation import get_evaluator
    from harness.evaluation.context import EvalContext
    from harness.export import load_saved
    from harness.progress import stage

    current = "load"
    try:
        stage("load", model_dir=str(model_dir))
        t = time.perf_counter()
        model, tokenizer = load_saved(model_dir, plan.dtype, plan.device)
        record["timing"]["load_s"] = time.perf_counter() - t
        current = "measure"
        stage("measure")
        adapter = adapter_for(model)
        record["measured"] = measure_sparsity(model, adapter, plan.target.n, plan.target.m)
        record["measured"]["params_after"] = sum(p.numel() for p in model.parameters())
        current = "evaluate"
        stage("evaluate")
        t = time.perf_counter()
        ectx = EvalContext(device=plan.device, data_dir=plan.data_dir, run_dir=plan.results_dir / "records",
                           run_id=run_id, seed=plan.seed, threads=threads,
                           kv=plan.kv, cache_dir=plan.cache_dir)
        for name, section in plan.evals:
            out = get_evaluator(name)(model, tokenizer, section, ectx)
            record["metrics"][out.section] = out.values
            record["metric_declarations"][out.section] = out.declaration
        for name, r in record["metrics"].get("ppl", {}).items():
            record["provenance"].setdefault("data_sha256", {})[f"eval:{name}/{r['split']}"] = r["data_sha256"]
        record["timing"]["eval_s"] = time.perf_counter() - t
        if plan.device.startswith("cuda"):
            record["memory"]["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        return None
    except Exception as exc:  # noqa: BLE001 - a failed evaluation leaves a failed record naming the stage
        import traceback

        log.error("evaluation %s failed at stage %s: %s: %s", run_id, current, type(exc).__name__, exc)
        return {"stage": current, "type": type(exc).__name__, "message": str(exc)[:2000],
                "traceback": traceback.format_exc()[-8000:]}


def evaluate_saved(source: dict, model_dir: Path, config: dict) -> dict:
    """Load the saved model, measure it, run the evaluators; write and return the linked record."""
    from harness.env import configure_runtime
    from harness.records import existing_status, read_record, record_path, run_id_for, write_record
    from harness.validate import validate

    runtime = config.get("runtime", {})
    threads = configure_runtime(runtime.get("threads"), runtime.get("offline", True))
    plan = validate(config)
    run_id = run_id_for(config, plan.param_defaults)
    if not plan.force and existing_status(plan.results_dir, run_id) == "ok":
        log.info("skip %s: record exists with status ok", run_id)
        return read_record(record_path(plan.results_dir, run_id))
    t0 = time.perf_counter()
    record = _linked_record(source, model_dir, config, plan, run_id, threads)
    record["error"] = _evaluation_stages(record, model_dir, plan, run_id, threads)
    if record["error"] is None:
        record["status"] = "ok"
    record["timing"]["total_s"] = time.perf_counter() - t0
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = write_record(plan.results_dir, record)
    log.info("record %s (%s, evaluation of %s) -> %s", run_id, record["status"], source.get("run_id"), path)
    from harness.tracking import track_run

    track_run(plan.tracking, plan.seed, config, record)
    return record


def evaluate(path: str | Path, overrides: list[str]) -> dict:
    """The linked record for `path` (record or saved model dir) under the command line's eval."""
    source, model_dir = source_of(path)
    p = Path(path).expanduser().resolve()
    # a record sits in <results>/records/, a saved model in <results>/models/<run_id>/
    config = new_config(source, overrides, p.parent.parent if p.is_file() else p.parent.parent)
    if model_dir is not None:
        return evaluate_saved(source, model_dir, config)
    from harness.run import run_experiment

    log.warning("run %s saved no model: pruning again (calibration and pruning run) with output.save_model=true",
                source.get("run_id"))
    config["output"]["save_model"] = True
    return run_experiment(config)


def main(argv: list[str] | None = None) -> int:
    from harness.env import configure_offline, offline_from_argv
    from harness.progress import configure_quiet

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__.strip())
        return 0 if argv else 2
    configure_offline(offline_from_argv(argv))
    configure_quiet()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = [a for a in argv if "=" not in a]
    if len(paths) != 1:
        print("prunebench: evaluate error: give exactly one record or saved model directory", file=sys.stderr)
        return 2
    try:
        record = evaluate(paths[0], [a for a in argv if "=" in a])
    except ConfigError as exc:   # EvaluateError included
        print(f"prunebench: evaluate error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in record["metrics"].items() if k != "ppl"}
    ppl = {k: round(v["value"], 4) for k, v in record["metrics"].get("ppl", {}).items()}
    print(f"prunebench: {record['run_id']} {record['status']} (pruning {record.get('pruning_id')}, "
          f"from {(record.get('evaluated_from') or {}).get('run_id')}) ppl={ppl} "
          f"metrics={json.dumps(summary, default=str)[:300]}")
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
