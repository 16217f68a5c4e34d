"""Offline lm-eval task configs over the local zero-shot files in the data directory.

Each task keeps lm-eval's own built-in prompt, choices and metrics: the generated YAML `include`s
the built-in task YAML (by absolute path inside the installed lm_eval package) and overrides only
where the data comes from (`dataset_path: json`, `dataset_name: null`, `dataset_kwargs.data_files`
keyed by the split the task evaluates, other splits null - otherwise task construction looks for a
train split).

The files in ../shared/data do not all have the columns the built-in tasks expect, so every task
has a converter that writes, on the fly, a JSONL with exactly the built-in's columns into a cache
directory (never into the repo). Converted files and YAMLs are keyed by the source files' sha256
and CONVERTER_VERSION, so they are rebuilt when either changes.

HellaSwag: the local copy is llama.cpp's derived text file (context already preprocessed, ctx_b
not capitalised, bracket markers removed), not Rowan/hellaswag. We rebuild columns the built-in
`process_docs` accepts (activity_label, ctx_a, ctx_b='', endings, label) and report the task under
its own name `hellaswag_llamacpp`, so it is never mistaken for lm-eval's `hellaswag`.

lm-eval's own CLI on the same files (the equality check in the README):
    python -m harness.evaluation.lm_eval_tasks --out /tmp/pb_tasks            # writes YAMLs+data
    lm_eval --model hf --model_args pretrained=<hf dir>,dtype=float32,max_length=2048 \\
        --include_path /tmp/pb_tasks --tasks arc_easy --batch_size 8 --limit 50
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import DataError

CONVERTER_VERSION = "2"


class TaskDataError(DataError):
    """A local task file is missing or malformed."""


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- converters: source files -> rows with the built-in task's columns ------------------------------

def convert_arc(path: Path) -> Iterator[dict]:
    """AI2 ARC jsonl {id, question: {stem, choices: [{text, label}]}, answerKey} -> HF ai2_arc columns
    {id, question: str, choices: {text: [...], label: [...]}, answerKey}."""
    for r in _jsonl(path):
        q = r["question"]
        yield {"id": r["id"], "question": q["stem"],
               "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
               "answerKey": r["answerKey"]}


def convert_openbookqa(path: Path) -> Iterator[dict]:
    """OpenBookQA jsonl {id, question: {stem, choices}, answerKey} -> HF openbookqa/main columns
    {id, question_stem, choices: {text, label}, answerKey}."""
    for r in _jsonl(path):
        q = r["question"]
        yield {"id": r["id"], "question_stem": q["stem"],
               "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
               "answerKey": r["answerKey"]}


def convert_boolq(path: Path) -> Iterator[dict]:
    """SuperGLUE BoolQ jsonl (label "true"/"false") -> HF super_glue/boolq columns (label int 0=False, 1=True;
    the built-in choices are ["no", "yes"])."""
    labels = {True: 1, False: 0, "true": 1, "false": 0}   # the SuperGLUE file stores the strings "true"/"false"
    for r in _jsonl(path):
        label = r["label"].lower() if isinstance(r["label"], str) else r["label"]
        if label not in labels:
            raise TaskDataError(f"boolq: unexpected label {r['label']!r}")
        yield {"question": r["question"], "passage": r["passage"], "idx": r["idx"], "label": labels[label]}


def convert_rte(path: Path) -> Iterator[dict]:
    """HF glue/rte validation parquet (sentence1, sentence2, label 0=entailment, idx): columns already match."""
    import pandas as pd

    for r in pd.read_parquet(path).to_dict("records"):
        yield {"sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": int(r["label"]), "idx": int(r["idx"])}


def convert_piqa(goal_file: Path, labels_file: Path) -> Iterator[dict]:
    """PIQA valid.jsonl {goal, sol1, sol2} + valid-labels.lst (one 0/1 per line) -> {goal, sol1, sol2, label}."""
    rows, labels = list(_jsonl(goal_file)), _lines(labels_file)
    if len(rows) != len(labels):
        raise TaskDataError(f"piqa: {len(rows)} rows but {len(labels)} labels")
    for r, label in zip(rows, labels):
        yield {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(label)}


def convert_winogrande(path: Path, labels_file: Path) -> Iterator[dict]:
    """WinoGrande dev {sentence, option1, option2, answer} -> same columns, `answer` the string "1"/"2"
    (the built-in doc_to_text maps {"1": 0, "2": 1}); checked against dev-labels.lst."""
    rows, labels = list(_jsonl(path)), _lines(labels_file)
    if len(rows) != len(labels):
        raise TaskDataError(f"winogrande: {len(rows)} rows but {len(labels)} labels")
    for r, label in zip(rows, labels):
        answer = str(r.get("answer", label)).strip()
        if answer != label or answer not in ("1", "2"):
            raise TaskDataError(f"winogrande: answer {answer!r} disagrees with label {label!r}")
        yield {"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": answer}


def convert_lambada(path: Path) -> Iterator[dict]:
    """OpenAI lambada_test.jsonl {text}: the columns of EleutherAI/lambada_openai already."""
    for r in _jsonl(path):
        yield {"text": r["text"]}


def convert_hellaswag_llamacpp(path: Path) -> Iterator[dict]:
    """llama.cpp hellaswag_val_full.txt.bz2: 6 lines per task (preprocessed 'activity: context', gold
    label, 4 preprocessed endings) -> {activity_label, ctx_a, ctx_b: '', endings, label} so that the
    built-in process_docs rebuilds the same query (its preprocess is idempotent on this text, up to
    collapsing runs of spaces again; ctx_b is not re-capitalised - the approximation)."""
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise TaskDataError(f"hellaswag: {len(lines)} lines is not a multiple of 6")
    for i in range(0, len(lines), 6):
        query, label, endings = lines[i], lines[i + 1], lines[i + 2:i + 6]
        activity, sep, ctx = query.partition(": ")
        if not sep:
            activity, ctx = "", query
        yield {"activity_label": activity, "ctx_a": ctx, "ctx_b": "", "endings": endings, "label": str(int(label))}


@dataclass(frozen=True)
class LocalTask:
    name: str                          # the task name our YAML registers (and the record reports)
    builtin: str                       # built-in YAML, relative to lm_eval/tasks
    split: str                         # the split the built-in task evaluates
    files: tuple[str, ...]             # source files, relative to the data directory
    convert: Callable[..., Iterator[dict]]
    columns: tuple[str, ...]           # the columns the built-in task reads (checked in tests)
    note: str = ""


TASKS: dict[str, LocalTask] = {t.name: t for t in (
    LocalTask("boolq", "super_glue/boolq/default.yaml", "validation", ("boolq/val.jsonl",), convert_boolq,
              ("question", "passage", "label")),
    LocalTask("rte", "glue/rte/default.yaml", "validation", ("rte/glue_rte_validation.parquet",), convert_rte,
              ("sentence1", "sentence2", "label")),
    LocalTask("hellaswag_llamacpp", "hellaswag/hellaswag.yaml", "validation",
              ("hellaswag/hellaswag_val_full.txt.bz2",), convert_hellaswag_llamacpp,
              ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
              note="approximate: llama.cpp's derived HellaSwag text, not Rowan/hellaswag"),
    LocalTask("winogrande", "winogrande/default.yaml", "validation",
              ("winogrande/dev.no_qid.jsonl", "winogrande/dev-labels.lst"), convert_winogrande,
              ("sentence", "option1", "option2", "answer")),
    LocalTask("arc_easy", "arc/arc_easy.yaml", "test", ("arc/ARC-Easy-Test.jsonl",), convert_arc,
              ("question", "choices", "answerKey")),
    LocalTask("arc_challenge", "arc/arc_challenge.yaml", "test", ("arc/ARC-Challenge-Test.jsonl",), convert_arc,
              ("question", "choices", "answerKey")),
    LocalTask("openbookqa", "openbookqa/openbookqa.yaml", "test", ("openbookqa/test.jsonl",), convert_openbookqa,
              ("question_stem", "choices", "answerKey")),
    LocalTask("piqa", "piqa/piqa.yaml", "validation", ("piqa/valid.jsonl", "piqa/valid-labels.lst"), convert_piqa,
              ("goal", "sol1", "sol2", "label")),
    LocalTask("lambada_openai", "lambada/lambada_openai.yaml", "test", ("lambada_openai/lambada_test.jsonl",),
              convert_lambada, ("text",)),
)}
# The hub name lm-eval uses for each of our task names (online runs use the built-ins unchanged).
HUB_NAMES = {name: ("hellaswag" if name == "hellaswag_llamacpp" else name) for name in TASKS}
SPLITS = ("training_split", "validation_split", "test_split")


def builtin_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def check_tasks(names: list[str]) -> None:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise TaskDataError(f"unknown zero-shot task(s) {unknown}; known: {', '.join(TASKS)}")


def check_local_tasks(section: dict, data_dir: Path | None) -> None:
    """Validation-time check of a `zeroshot` eval section (no conversion, no lm-eval import)."""
    names = list(section.get("tasks") or [])
    if not names:
        raise TaskDataError("eval.zeroshot.tasks is empty")
    check_tasks(names)
    if section.get("source", "local") not in ("local", "hub"):
        raise TaskDataError("eval.zeroshot.source must be local or hub")
    if section.get("source", "local") == "local":
        for name in names:
            source_paths(TASKS[name], data_dir)


def source_paths(task: LocalTask, data_dir: Path | None) -> list[Path]:
    if data_dir is None:
        raise TaskDataError(f"task {task.name}: no data directory (../shared/data or PRUNEBENCH_DATA_DIR)")
    paths = [Path(data_dir) / f for f in task.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise TaskDataError(f"task {task.name}: missing local file(s) {missing}")
    return paths


def _digest(paths: list[Path]) -> str:
    from harness.hashing import sha256_file

    h = hashlib.sha256(CONVERTER_VERSION.encode())
    for p in paths:
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def convert_task(name: str, data_dir: Path, out_dir: Path) -> dict:
    """Write the converted JSONL for one task into out_dir (atomic, skipped when present);
    returns {path, rows, sha256 of the sources}."""
    from harness.files import write_atomic

    task = TASKS[name]
    sources = source_paths(task, data_dir)
    digest = _digest(sources)
    path = Path(out_dir) / f"{name}.{task.split}.{digest[:12]}.jsonl"
    if not path.is_file():
        rows = [json.dumps(r, ensure_ascii=False) for r in task.convert(*sources)]
        write_atomic(path, "\n".join(rows) + "\n")
    n = sum(1 for line in open(path, encoding="utf-8") if line.strip())
    return {"path": path, "rows": n, "sources_sha256": digest}


def task_yaml(name: str, data_file: Path) -> str:
    """The YAML text: the built-in include plus the local-data overrides (JSON is valid YAML)."""
    task = TASKS[name]
    cfg = {"include": str(builtin_dir() / task.builtin), "task": name, "dataset_path": "json",
           "dataset_name": None, "dataset_kwargs": {"data_files": {task.split: str(data_file)}}}
    for key in SPLITS:
        cfg[key] = task.split if key == f"{task.split}_split" else None
    # yaml.safe_dump would also do; JSON keeps it dependency-free and lm-eval's loader reads it as YAML.
    return "\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items()) + "\n"


def prepare_tasks(names: list[str], data_dir: Path | None, out_dir: Path) -> tuple[Path, dict]:
    """Convert the data and write one YAML per task into a directory keyed by the sources' digests.
    Returns (include_path for TaskManager / `lm_eval --include_path`, {task: data provenance})."""
    check_tasks(names)
    out_dir = Path(out_dir)
    data_out = out_dir / "data"
    info = {name: convert_task(name, data_dir, data_out) for name in names}
    key = hashlib.sha256("".join(f"{n}:{info[n]['sources_sha256']}" for n in sorted(names)).encode()).hexdigest()
    include = out_dir / "yaml" / key[:16]
    from harness.files import write_atomic

    for name in names:
        target = include / f"{name}.yaml"
        text = task_yaml(name, info[name]["path"])
        if not target.is_file() or target.read_text() != text:
            write_atomic(target, text)
    return include, {n: {"data_file": str(i["path"]), "rows": i["rows"], "sources_sha256": i["sources_sha256"],
                         "split": TASKS[n].split, "builtin": TASKS[n].builtin, "note": TASKS[n].note}
                     for n, i in info.items()}


def main(argv: list[str] | None = None) -> None:
    from harness.data import resolve_data_dir

    p = argparse.ArgumentParser(description="Write offline lm-eval task YAMLs (+ converted data) for "
                                            "`lm_eval --include_path`.")
    p.add_argument("--out", required=True, help="directory to write into (data/ and yaml/<key>/)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    include, info = prepare_tasks(a.tasks.split(","), resolve_data_dir(a.data_dir), Path(a.out))
    for name, i in info.items():
        print(f"{name}: {i['rows']} rows ({i['split']}) <- {i['builtin']}")
    print(f"include_path: {include}")


if __name__ == "__main__":
    main()
