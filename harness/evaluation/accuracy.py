"""Task accuracy of a sequence classifier (an encoder with a classification head) on the held-out
rows of a local classification task (harness.tasks: the seeded split; eval rows only).

Section: {task: boolq, split: eval, holdout: 0.2, split_seed: 0, max_length: 128, batch_size: 32,
dense_baseline: false}. `dense_baseline: true` also evaluates the model before pruning (the runner
stores it as `<section>_dense`), so one record holds the accuracy before and after.
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.record_schema import Evaluated, result, section
from harness.tasks import SPLITS, accuracy, batches, task, task_file, task_rows

PROTOCOL = "encoder-task-accuracy"
PROTOCOL_VERSION = "1"
LENGTH_KEYS = ("max_length",)


def _settings(cfg: dict) -> dict:
    return {"split": cfg.get("split", "eval"), "holdout": float(cfg.get("holdout", 0.2)),
            "split_seed": int(cfg.get("split_seed", 0)), "max_length": int(cfg.get("max_length", 128))}


def evaluated_texts(section_cfg: dict) -> list[tuple[str, str]]:
    return [(section_cfg["task"], section_cfg.get("split", "eval"))]


def check(section_cfg: dict, data_dir, device: str) -> None:
    task(section_cfg.get("task", ""))
    if section_cfg.get("split", "eval") not in SPLITS:
        raise ConfigError(f"eval.accuracy.split must be one of {SPLITS}")
    if not 0 < float(section_cfg.get("holdout", 0.2)) < 1:
        raise ConfigError("eval.accuracy.holdout must be in (0, 1)")
    task_file(section_cfg["task"], data_dir)


def declare(results: dict):
    """The accuracy on the task's held-out rows (higher is better), with the split that made them;
    from the values alone, as every evaluator's `declare` (one task per section: `task`)."""
    name, r = next(iter(results.items()))
    settings = {key: r[key] for key in ("split", "holdout", "split_seed", "max_length")}
    return section(PROTOCOL, PROTOCOL_VERSION, "accuracy", [
        result(f"{name} acc", [name, "acc"], True, quality=True, headline=True, header=f"{name} acc")],
        settings=settings)


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    settings = _settings(cfg)
    name = cfg["task"]
    rows, sha = task_rows(name, settings["split"], ctx.data_dir, settings["holdout"], settings["split_seed"])
    r = accuracy(model, batches(tokenizer, rows, settings["max_length"], int(cfg.get("batch_size", 32))),
                 ctx.device)
    positives = sum(y for _, _, y in rows)
    r.update({"majority": max(positives, len(rows) - positives) / max(len(rows), 1), "task": name,
              "data_sha256": sha, **settings})
    return Evaluated("accuracy", {name: r}, declare({name: r}))
