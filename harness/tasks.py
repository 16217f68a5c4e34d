"""Sentence(-pair) classification tasks for encoders: local rows, a seeded train/eval split, batches.

The local files are evaluation sets (BoolQ validation, RTE validation); an encoder fine-tuned here
needs training rows too, so each task's rows are split by a seeded hash of (seed, row index): a row
whose hash falls below `holdout` is an *eval* row, every other row a *train* row. The split depends
on the file, the seed and the fraction only (not on row order elsewhere or on the tokenizer), so the
fine-tuning script, pruning calibration (train rows) and the accuracy evaluator (eval rows) agree,
and no eval row is ever trained or calibrated on.

Encoding (tokenizers without CLS/SEP, e.g. SmolLM2's BPE): [bos] a [eos] b, cut to max_length; the
classifier pools position 0 (the bos token stands in for CLS).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data import verified_sha256
from harness.errors import DataError

SPLITS = ("train", "eval")
# Texts are cut at CHARS_PER_TOKEN * max_length characters before tokenizing (the byte-level test
# tokenizer is quadratic in a text's length); the tokenizers used here average 1-5 characters a
# token, so the first max_length tokens come from well inside the cut.
CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class ClassificationTask:
    name: str
    file: str                          # relative to the data dir
    fields: tuple[str, str]            # text a, text b
    label: str                         # label column
    positive: tuple = (1, "true", True)   # label values mapped to class 1 (others: 0)


TASKS: dict[str, ClassificationTask] = {
    "boolq": ClassificationTask("boolq", "boolq/val.jsonl", ("question", "passage"), "label", ("true", True, 1)),
    # GLUE RTE: 0 entailment, 1 not_entailment (kept as the class index)
    "rte": ClassificationTask("rte", "rte/glue_rte_validation.parquet", ("sentence1", "sentence2"), "label", (1,)),
}


def task(name: str) -> ClassificationTask:
    if name not in TASKS:
        raise DataError(f"unknown classification task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def task_file(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataError(f"task {name} needs the local data directory (paths.data_dir)")
    path = Path(data_dir) / task(name).file
    if not path.is_file():
        raise DataError(f"data for task {name} missing: {path} not found")
    return path


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_eval_row(index: int, seed: int, holdout: float) -> bool:
    """Row `index` is held out for evaluation when its seeded hash falls below `holdout`."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < holdout


def task_rows(name: str, split: str, data_dir: Path | None, holdout: float = 0.2,
              seed: int = 0) -> tuple[list[tuple[str, str, int]], str]:
    """([(text a, text b, label)], file sha256) of one split ("train" or "eval")."""
    if split not in SPLITS:
        raise DataError(f"task split must be one of {SPLITS}, got {split!r}")
    t = task(name)
    path = task_file(name, data_dir)
    sha = verified_sha256(path)
    rows = []
    for i, row in enumerate(_read(path)):
        if is_eval_row(i, seed, holdout) == (split == "eval"):
            rows.append((str(row[t.fields[0]]), str(row[t.fields[1]]), int(row[t.label] in t.positive)))
    return rows, sha


def encode_pairs(tokenizer, rows, max_length: int) -> list[list[int]]:
    """Per row [bos] a [eos] b, cut to max_length token ids (one batched tokenizer call per field)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    if not rows:
        return []
    cut = CHARS_PER_TOKEN * max_length     # only the first max_length tokens are kept anyway
    first = tokenizer([a[:cut] for a, _, _ in rows], add_special_tokens=False)["input_ids"]
    second = tokenizer([b[:cut] for _, b, _ in rows], add_special_tokens=False)["input_ids"]
    return [([bos] + x + [sep] + y)[:max_length] for x, y in zip(first, second)]


def pad_batch(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [B, longest] (right padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def batch_ids(seqs: list[list[int]], pad: int, batch_size: int) -> list[dict]:
    """Padded inputs per batch of `batch_size` sequences, in order."""
    return [pad_batch(seqs[i:i + batch_size], pad) for i in range(0, len(seqs), batch_size)]


def batches(tokenizer, rows, max_length: int, batch_size: int) -> list[tuple[dict, torch.Tensor]]:
    """[(inputs, labels [B])] in row order."""
    inputs = batch_ids(encode_pairs(tokenizer, rows, max_length), pad_id(tokenizer), batch_size)
    labels = [y for _, _, y in rows]
    return [(x, torch.tensor(labels[i * batch_size:(i + 1) * batch_size])) for i, x in enumerate(inputs)]


@torch.no_grad()
def accuracy(model, batched, device: str = "cpu") -> dict:
    """{"acc", "n", "correct", "predictions"} of a sequence classifier over [(inputs, labels)];
    predictions: the predicted class of each row, one digit a row (compared across records)."""
    correct = n = 0
    preds = []
    for inputs, labels in batched:
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits    # [B, classes]
        pred = logits.argmax(-1).cpu()
        correct += int((pred == labels).sum())
        n += len(labels)
        preds += pred.tolist()
    return {"acc": correct / max(n, 1), "n": n, "correct": correct, "predictions": "".join(map(str, preds))}
