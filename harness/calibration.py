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

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data import CORPORA, DataError, load_rows
from harness.digests import drop, verify_file
from harness.files import write_atomic
from harness.hashing import sha256_text, sha256_tokens

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
    reused: bool = False              # token ids read from the cache instead of re-tokenized

    def describe(self) -> dict:
        return {"corpus": self.corpus, "split": self.split, "n_samples": self.n_samples,
                "seq_len": self.seq_len, "seed": self.seed, "mode": self.mode,
                "tokens_sha256": self.tokens_sha256, "data_sha256": self.data_sha256,
                "source": self.source, "variant": self.variant, "reused": self.reused}


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


def _tokens_cache_path(cache_dir: Path, tokenizer, rows_sha256: str | None, corpus: str, split: str,
                       n_samples: int, seq_len: int, seed: int, mode: str) -> Path | None:
    """Where the token ids of this draw live: keyed by tokenizer identity, data file and draw."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or rows_sha256 is None:
        return None
    key = json.dumps({"tokenizer": sha256_text(backend.to_str()), "data": rows_sha256, "corpus": corpus,
                      "split": split, "n": n_samples, "seq_len": seq_len, "seed": seed, "mode": mode},
                     sort_keys=True)
    return Path(cache_dir) / "calibration" / f"{sha256_text(key)[:24]}.pt"


def sample_calibration(tokenizer, corpus: str, split: str, n_samples: int, seq_len: int, seed: int,
                       data_dir: Path | None, mode: str = "reference",
                       cache_dir: Path | None = None) -> CalibrationSet:
    """Draw the calibration windows; with `cache_dir`, token ids of an identical earlier draw
    (same tokenizer, data file and draw parameters) are reused instead of re-tokenizing."""
    if mode not in MODES:
        raise DataError(f"unknown calibration mode {mode!r}; one of {', '.join(MODES)}")
    rows = load_rows(corpus, split, data_dir)
    path = (_tokens_cache_path(cache_dir, tokenizer, rows.sha256, corpus, split, n_samples, seq_len,
                               seed, mode) if cache_dir is not None else None)
    ids = None
    if path is not None and path.is_file():
        # Verified against the digest written with the entry: a corrupt entry is dropped and redrawn.
        if verify_file(path):
            try:
                ids = torch.load(path, weights_only=True)
            except Exception:  # noqa: BLE001 - unreadable cache entry: draw again
                ids = None
        if ids is None:
            drop(path, "digest mismatch or unreadable")
    reused = ids is not None
    if ids is None:
        if mode == "reference":
            ids = _reference_draw(rows.rows, tokenizer, n_samples, seq_len, seed)
        else:
            ids = _stream_draw(CORPORA[corpus].joiner.join(rows.rows), tokenizer, n_samples, seq_len, seed)
        if path is not None:
            write_atomic(path, lambda tmp: torch.save(ids, tmp), digest=True)
    return CalibrationSet(ids, corpus, split, n_samples, seq_len, seed, mode, sha256_tokens(ids),
                          rows.sha256, rows.source, rows.variant, reused)
