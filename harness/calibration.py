"""Calibration sampler: `n_samples x seq_len` token windows from a named corpus with a seed.

Default `mode=reference` draws exactly as the SparseGPT/Wanda reference code does, so with the
same corpus file and tokenizer the windows are identical to theirs:

    random.seed(seed)
    repeat n_samples times:
        draw a document index uniformly over the corpus until its tokenization is longer than seq_len
        draw a start uniformly in [0, len - seq_len - 1]; take seq_len tokens

`mode=stream` draws windows from the joined text (the reference's WikiText-2/PTB calibration).
The record holds the sha256 of the actual token ids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data import CORPORA, DataError, load_rows
from harness.hashing import sha256_tokens

MODES = ("reference", "stream")


@dataclass
class CalibrationSet:
    input_ids: torch.Tensor           # [n_samples, seq_len] int64
    corpus: str
    split: str
    n_samples: int
    seq_len: int
    seed: int
    mode: str
    tokens_sha256: str
    data_sha256: str | None
    source: str
    variant: str | None

    def describe(self) -> dict:
        return {"corpus": self.corpus, "split": self.split, "n_samples": self.n_samples,
                "seq_len": self.seq_len, "seed": self.seed, "mode": self.mode,
                "tokens_sha256": self.tokens_sha256, "data_sha256": self.data_sha256,
                "source": self.source, "variant": self.variant}


def _reference_draw(rows: list[str], tokenizer, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    random.seed(seed)  # the reference seeds the global generator; we reproduce its draw order
    tokenized: dict[int, list[int]] = {}  # memo only: the reference re-tokenizes, results are equal
    windows = []
    long_docs_seen = 0
    for _ in range(n_samples):
        for _attempt in range(100_000):
            i = random.randint(0, len(rows) - 1)
            if i not in tokenized:
                tokenized[i] = tokenizer(rows[i])["input_ids"]
            if len(tokenized[i]) > seq_len:
                long_docs_seen += 1
                break
        else:
            raise DataError(f"no document longer than {seq_len} tokens found in {len(rows)} rows")
        ids = tokenized[i]
        start = random.randint(0, len(ids) - seq_len - 1)
        windows.append(ids[start:start + seq_len])
    return torch.tensor(windows, dtype=torch.int64)


def _stream_draw(text: str, tokenizer, n_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    ids = tokenizer(text)["input_ids"]
    if len(ids) <= seq_len + 1:
        raise DataError(f"corpus has {len(ids)} tokens, fewer than seq_len={seq_len}")
    random.seed(seed)
    windows = []
    for _ in range(n_samples):
        start = random.randint(0, len(ids) - seq_len - 1)
        windows.append(ids[start:start + seq_len])
    return torch.tensor(windows, dtype=torch.int64)


def sample_calibration(tokenizer, corpus: str, split: str, n_samples: int, seq_len: int, seed: int,
                       data_dir: Path | None, mode: str = "reference") -> CalibrationSet:
    if mode not in MODES:
        raise DataError(f"unknown calibration mode {mode!r}; one of {', '.join(MODES)}")
    rows = load_rows(corpus, split, data_dir)
    if mode == "reference":
        ids = _reference_draw(rows.rows, tokenizer, n_samples, seq_len, seed)
    else:
        ids = _stream_draw(CORPORA[corpus].joiner.join(rows.rows), tokenizer, n_samples, seq_len, seed)
    return CalibrationSet(ids, corpus, split, n_samples, seq_len, seed, mode, sha256_tokens(ids),
                          rows.sha256, rows.source, rows.variant)
