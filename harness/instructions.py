"""Instruction-format training data (the Alpaca layout) and the prompts wrapped around it.

A row is {"instruction": str, "input": str (may be empty), "output": str}, one JSON object per line
(`instructions:<path.jsonl>`, relative paths resolved against the data directory). Offline there is
no Alpaca; `instructions:arc_dev` builds Alpaca-format rows at run time from the ARC *dev* splits
(AI2 ARC, CC BY-SA 4.0; lm-eval's arc_easy / arc_challenge score the test splits, never dev) and
writes them into the cache, never into the repository. A plain-text corpus of harness.data (c4)
is also accepted: documents are packed into windows behind the prompt.

Supervised windows follow the Alpaca/Compresso recipe: source = template(instruction, input),
target = output + EOS, the loss only on target tokens (source tokens and padding are labelled
IGNORE). A window is stored as ids and labels stacked, [2, seq_len], so the shared resumable loop
(harness.recovery.train) slices examples like any window tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import DataError

IGNORE = -100

# Compresso's collaborative prompt, verbatim from the reference (Compresso/tasks/alpaca.py,
# PROMPT_DICT["pruning_prompt_input"/"pruning_prompt_no_input"]): a system text telling the model it
# is being pruned, then the instruction.
COLLABORATIVE_SYSTEM = (
    "###System Instruction:\nAttention, LLM! You are undergoing optimization with a pruning algorithm to boost "
    "efficiency by removing redundant parameters. Here's what you need to know:\n"
    "Improved Efficiency: The pruning algorithm streamlines your operations, enhancing overall performance.\n"
    "Resource Utilization: Reducing unnecessary parameters optimizes computational resources and memory "
    "requirements.\n"
    "Maintaining Quality: The algorithm selectively prunes to preserve language generation capabilities while "
    "minimizing impact on performance.\n"
    "Iterative Refinement: Pruning occurs gradually, with fine-tuning after each step to ensure a smooth "
    "transition.\n"
    "Collaboration: Embrace changes, continue generating high-quality language outputs to contribute to the "
    "optimization process.\n"
    "Continuous Learning: Pruning helps you evolve, focusing on essential aspects of language generation.\n"
    "Together, we'll create a leaner and more efficient version of you. Let's unlock your full potential through "
    "pruning.\n\n")

TEMPLATES: dict[str, tuple[str, str]] = {
    # name -> (with input, without input)
    "collaborative": (
        COLLABORATIVE_SYSTEM + "Below is an User Instruction that describes a task, paired with an input that "
        "provides further context, please take full consideration of the System Instruction mentioned above, and "
        "then write a response that appropriately completes the request.\n\n"
        "###User Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
        COLLABORATIVE_SYSTEM + "Below is an User Instruction that describes a task, please take full consideration "
        "of the System Instruction mentioned above, and then write a response that appropriately completes the "
        "request.\n\n###User Instruction:\n{instruction}\n\n### Response:"),
    "alpaca": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\n{instruction}\n\n### Response:"),
}

# What the reference prepends to every evaluated sequence (lm_eval/models/compresso.py, PROMPT_DICT):
# "train" is prompt_mark 1 (the training system text; the default of its evaluation scripts), "eval"
# prompt_mark 2 (the past-tense variant written for the pruned model). Plain text (perplexity
# windows) is scored behind one of them.
INFERENCE_PROMPTS: dict[str, str] = {
    "train": COLLABORATIVE_SYSTEM + "Below is an User Instruction that describes a task, please take full "
    "consideration of the System Instruction mentioned above, and then write a response that appropriately "
    "completes the request.\n\n###Input:\n",
    "eval": (
        "###System Instruction:\nAttention, LLM! You've undergone model pruning, and here's what's changed:\n"
        "Improved Efficiency: The pruning process has streamlined your operations, boosting overall performance.\n"
        "Resource Utilization: We've reduced unnecessary parameters to optimize computational resources and memory "
        "usage.\n"
        "Maintained Quality: We've selectively pruned while preserving your language generation capabilities, "
        "minimizing the impact on performance.\n"
        "Iterative Refinement: Pruning occurred gradually, with fine-tuning after each step to ensure a smooth "
        "transition.\n"
        "Collaboration: Embrace these changes and continue generating high-quality language outputs to contribute "
        "to the optimization process.\n"
        "Continuous Learning: Pruning helps you evolve, focusing on essential aspects of language generation. "
        "Together, we've created a leaner and more efficient version of you. Let's unlock your full potential "
        "through pruning!\n"
        "Below is an User Instruction that describes a task, please take full consideration of the System "
        "Instruction mentioned above, and then write a response that appropriately completes the request.\n\n"
        "###Input:\n"),
}

ARC_DEV_FILES = ("arc/ARC-Easy-Dev.jsonl", "arc/ARC-Challenge-Dev.jsonl")


@dataclass
class InstructionData:
    windows: torch.Tensor        # [n, 2, seq_len] int64: ids, labels (IGNORE where not scored)
    info: dict                   # for the record: corpus, source, sha256, counts


def format_source(row: dict, template: str) -> str:
    with_input, without = TEMPLATES[template]
    return (with_input if str(row.get("input") or "").strip() else without).format_map(
        {"instruction": row["instruction"], "input": row.get("input") or ""})


def read_instruction_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or \
                not isinstance(row.get("output"), str):
            raise DataError(f"{path}:{n}: an instruction row needs string fields instruction and output")
        rows.append({"instruction": row["instruction"], "input": str(row.get("input") or ""), "output": row["output"]})
    if not rows:
        raise DataError(f"{path}: no instruction rows")
    return rows


def arc_to_instruction(item: dict) -> dict:
    """One ARC question as an Alpaca row: the stem as instruction, the labelled choices as input, the
    correct choice as output ("B. television")."""
    q = item["question"]
    choices = "\n".join(f"{c['label']}. {c['text']}" for c in q["choices"])
    answer = next(c for c in q["choices"] if c["label"] == item["answerKey"])
    return {"instruction": "Answer the multiple-choice science question.\n" + q["stem"], "input": choices,
            "output": f"{answer['label']}. {answer['text']}"}


def build_arc_dev(data_dir: Path, cache_dir: Path) -> tuple[Path, list[str]]:
    """Write the ARC dev questions as instruction JSONL into the cache (re-used when present);
    returns the file and the sha256 of the source files (checked against their manifest)."""
    from harness.data import verified_sha256
    from harness.hashing import sha256_text

    sources = [data_dir / rel for rel in ARC_DEV_FILES]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise DataError(f"instruction corpus arc_dev needs {', '.join(missing)}")
    digests = [verified_sha256(p) for p in sources]
    out = cache_dir / "instructions" / f"arc_dev-{sha256_text(''.join(digests))[:12]}.jsonl"
    if not out.is_file():
        rows = [arc_to_instruction(json.loads(line)) for p in sources
                for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out)
    return out, digests


def supervised_windows(rows: list[dict], tokenizer, seq_len: int, template: str) -> tuple[torch.Tensor, int]:
    """[n, 2, seq_len]: ids = source + output + EOS right-padded with EOS; labels = IGNORE on the source
    and the padding. Rows whose source leaves no room for an output token are skipped (counted)."""
    eos = tokenizer.eos_token_id
    pad = eos if eos is not None else 0
    out, skipped = [], 0
    for row in rows:
        src = tokenizer(format_source(row, template))["input_ids"]
        tgt = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        ids = (src + tgt)[:seq_len]
        if len(src) >= len(ids):
            skipped += 1
            continue
        labels = [IGNORE] * len(src) + ids[len(src):]
        fill = seq_len - len(ids)
        out.append(torch.tensor([ids + [pad] * fill, labels + [IGNORE] * fill], dtype=torch.int64))
    if not out:
        raise DataError(f"no instruction row fits in seq_len={seq_len} behind the {template!r} template")
    return torch.stack(out), skipped                                       # [n, 2, seq_len]


def text_windows(docs: list[str], tokenizer, seq_len: int, prefix: str) -> torch.Tensor:
    """Plain text packed behind `prefix`: each window is prefix + (seq_len - len(prefix)) text tokens,
    the loss on the text only. [n, 2, seq_len]."""
    pre = tokenizer(prefix)["input_ids"] if prefix else []
    room = seq_len - len(pre)
    if room < 2:
        raise DataError(f"seq_len={seq_len} leaves no room for text behind a {len(pre)}-token prompt")
    ids: list[int] = []
    for doc in docs:
        if doc.strip():
            ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
    n = len(ids) // room
    body = torch.tensor(ids[: n * room], dtype=torch.int64).view(n, room)
    head = torch.tensor(pre, dtype=torch.int64).expand(n, len(pre))
    x = torch.cat([head, body], 1)                                         # [n, seq_len]
    labels = torch.cat([torch.full_like(head, IGNORE), body], 1)
    return torch.stack([x, labels], 1)


def load_training_windows(corpus: str, tokenizer, seq_len: int, template: str, data_dir: Path | None,
                          cache_dir: Path | None, max_docs: int | None = None) -> InstructionData:
    """The training windows of `corpus`: `instructions:arc_dev`, `instructions:<path.jsonl>`, or a
    harness.data corpus name (plain text, its train split, behind the template's system text)."""
    from harness.data import CORPORA, load_rows
    from harness.hashing import sha256_file, sha256_tokens

    if template not in TEMPLATES:
        raise DataError(f"unknown instruction template {template!r}; one of {', '.join(TEMPLATES)}")
    if corpus.startswith("instructions:"):
        name = corpus.split(":", 1)[1]
        if name == "arc_dev":
            if data_dir is None or cache_dir is None:
                raise DataError("instructions:arc_dev needs a data directory and a cache directory")
            path, source_sha = build_arc_dev(data_dir, cache_dir)
            source = {"built_from": list(ARC_DEV_FILES), "source_sha256": source_sha,
                      "license": "CC BY-SA 4.0 (AI2 ARC)"}
        else:
            path = Path(name).expanduser()
            if not path.is_absolute() and data_dir is not None and not path.is_file():
                path = data_dir / path
            if not path.is_file():
                raise DataError(f"instruction file not found: {name}")
            source = {"file": name}
        rows = read_instruction_jsonl(path)[:max_docs]
        windows, skipped = supervised_windows(rows, tokenizer, seq_len, template)
        info = {"kind": "instructions", "rows": len(rows), "skipped_too_long": skipped,
                "file_sha256": sha256_file(path), **source}
    elif corpus in CORPORA:
        rows = load_rows(corpus, "train", data_dir)
        docs = rows.rows[:max_docs]
        windows = text_windows(docs, tokenizer, seq_len, COLLABORATIVE_SYSTEM if template == "collaborative" else "")
        info = {"kind": "text", "split": "train", "docs": len(docs), "data_sha256": rows.sha256,
                "source": rows.source}
    else:
        raise DataError(f"unknown training corpus {corpus!r}: instructions:arc_dev, instructions:<file.jsonl> "
                        f"or one of {', '.join(sorted(CORPORA))}")
    scored = int((windows[:, 1] != IGNORE).sum())
    info |= {"corpus": corpus, "template": template, "seq_len": seq_len, "windows": int(windows.shape[0]),
             "scored_tokens": scored, "tokens_sha256": sha256_tokens(windows.reshape(-1, seq_len))}
    return InstructionData(windows, info)
