"""Zero-shot accuracy through lm-evaluation-harness on the in-memory (possibly pruned) model.

`simple_evaluate` runs lm-eval's own built-in prompts and metrics on `HFLM(pretrained=model,
tokenizer=...)`. Offline (the default, `source: local`) the tasks read the local files through the
generated task YAMLs of harness.evaluation.lm_eval_tasks (TaskManager(include_path=...,
include_defaults=False)); `source: hub` uses lm-eval's built-in tasks unchanged (online users).

Pinned: max_length (HFLM's default would be the model's 8192), batch size (never "auto" on CPU),
threads (torch's, recorded), bootstrap_iters, seeds. Recorded per task: acc / acc_norm (and
LAMBADA's perplexity) with stderr, n, the task version, the data provenance and `limit`.
Per-sample outputs go to <run_dir>/<run_id>.zeroshot.jsonl beside the record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from harness.env import default_cache_dir
from harness.evaluation.lm_eval_tasks import HUB_NAMES, check_local_tasks, prepare_tasks
from harness.record_schema import Evaluated, result, section, spread

PROTOCOL = "lm-eval-zeroshot"
PROTOCOL_VERSION = "1"
METRICS = ("acc", "acc_norm", "perplexity")


def _task_manager(names: list[str], source: str, data_dir, cache_dir: Path):
    from lm_eval.tasks import TaskManager

    if source == "hub":
        return TaskManager(), [HUB_NAMES[n] for n in names], {}
    include, provenance = prepare_tasks(names, data_dir, cache_dir / "lm_eval_tasks")
    return TaskManager(include_path=str(include), include_defaults=False), list(names), provenance


def run_lm_eval(model, tokenizer, names: list[str], *, limit=None, batch_size: int = 8, max_length: int = 2048,
                bootstrap_iters: int = 100, num_fewshot: int = 0, seed: int = 0, device: str = "cpu",
                source: str = "local", data_dir=None, cache_dir: Path | None = None) -> dict:
    """lm-eval's simple_evaluate on an in-memory model; returns its raw output dict plus provenance."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    tm, task_names, provenance = _task_manager(names, source, data_dir, Path(cache_dir or default_cache_dir()))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size), max_length=int(max_length),
              device=device)
    out = lm_eval.simple_evaluate(model=lm, tasks=task_names, task_manager=tm, num_fewshot=num_fewshot,
                                  limit=limit, bootstrap_iters=int(bootstrap_iters), log_samples=True,
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed)
    out["_provenance"] = provenance
    return out


def summarize(out: dict) -> dict:
    """Per task: each of acc / acc_norm / perplexity present with its stderr, n, task version."""
    tasks = {}
    for task, res in out["results"].items():
        entry = {}
        for metric in METRICS:
            if f"{metric},none" in res:
                entry[metric] = res[f"{metric},none"]
                stderr = res.get(f"{metric}_stderr,none")
                entry[f"{metric}_stderr"] = stderr if isinstance(stderr, (int, float)) else None
        n = out.get("n-samples", {}).get(task, {})
        entry["n"] = n.get("effective")
        entry["n_total"] = n.get("original")
        entry["task_version"] = out.get("versions", {}).get(task)
        entry.update({f"data_{k}": v for k, v in out.get("_provenance", {}).get(task, {}).items()})
        tasks[task] = entry
    return tasks


def write_samples(path: Path, out: dict) -> int:
    """One JSON line per (task, doc): the doc id, target, per-choice log-likelihoods and metrics."""
    from harness.files import write_atomic

    lines = []
    for task, samples in out.get("samples", {}).items():
        for s in samples:
            lines.append(json.dumps({
                "task": task, "doc_id": s.get("doc_id"), "target": s.get("target"),
                "resps": s.get("filtered_resps"),
                **{m: s[m] for m in METRICS if m in s}}, default=str))
    write_atomic(path, "\n".join(lines) + "\n")
    return len(lines)


def check(section: dict, data_dir, device: str) -> None:
    """Validation: known task names, a known source, and (source local) every task's files in the
    data directory; a one-line TaskDataError, with no conversion and no lm-eval import."""
    check_local_tasks(section, data_dir)


# Ranked per task (higher is better): accuracy is the headline; acc_norm is kept in the CSV files.
# LAMBADA's perplexity is recorded but not declared (v1 boards never showed it).
RANKED = {"acc": True, "acc_norm": False}   # metric -> headline


def declare(values: dict):
    """Per task: acc and acc_norm (higher is better) with lm-eval's bootstrap stderr as their spread,
    and the unweighted mean accuracy over the tasks. Quoted settings: the lm-eval version, the number
    of shots, the per-task sample limit (when set) and the thread count."""
    metrics, accs = [], []
    for task, d in values["tasks"].items():
        for metric, headline in RANKED.items():
            if metric in d:
                m = result(f"{task} {metric}", ["tasks", task, metric], True, quality=True, headline=headline)
                metrics.append(m)
                if f"{metric}_stderr" in d:
                    metrics.append(spread("stderr", m, ["tasks", task, f"{metric}_stderr"]))
                if metric == "acc":
                    accs.append(m["name"])
    settings = {"lm_eval_version": values["lm_eval_version"], "num_fewshot": values["num_fewshot"],
                "limit": values["limit"], "threads": values["threads"]}
    means = [{"name": "zero-shot mean acc", "header": "mean acc", "of": accs, "over": "tasks",
              "higher_is_better": True, "quality": True}] if accs else None
    return section(PROTOCOL, PROTOCOL_VERSION, "zeroshot", metrics,
                   settings={k: v for k, v in settings.items() if v is not None}, means=means)


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    """cfg: {tasks, limit, batch_size, max_length, bootstrap_iters, num_fewshot, source: local|hub}"""
    import lm_eval

    t0 = time.perf_counter()
    limit = cfg.get("limit")
    names = list(cfg["tasks"])
    cache_dir = ctx.cache_dir
    out = run_lm_eval(model, tokenizer, names, limit=limit, batch_size=int(cfg.get("batch_size", 8)),
                      max_length=int(cfg.get("max_length", 2048)),
                      bootstrap_iters=int(cfg.get("bootstrap_iters", 100)),
                      num_fewshot=int(cfg.get("num_fewshot", 0)), seed=ctx.seed, device=ctx.device,
                      source=cfg.get("source", "local"), data_dir=ctx.data_dir, cache_dir=cache_dir)
    samples_file = None
    if ctx.run_dir is not None and ctx.run_id:
        samples_file = Path(ctx.run_dir) / f"{ctx.run_id}.zeroshot.jsonl"
        write_samples(samples_file, out)
    values = {
        "protocol": PROTOCOL, "protocol_version": PROTOCOL_VERSION, "lm_eval_version": lm_eval.__version__,
        "source": cfg.get("source", "local"), "limit": limit, "num_fewshot": int(cfg.get("num_fewshot", 0)),
        "batch_size": int(cfg.get("batch_size", 8)), "max_length": int(cfg.get("max_length", 2048)),
        "bootstrap_iters": int(cfg.get("bootstrap_iters", 100)), "threads": torch.get_num_threads(),
        "samples_file": samples_file.name if samples_file else None,
        "eval_s": time.perf_counter() - t0, "tasks": summarize(out)}
    return Evaluated("zeroshot", values, declare(values))
