"""Text corpora for perplexity and calibration, read from a configurable data directory.

Local files (../shared/data here) are read exactly as the HF loaders split them, so joined texts
match what the reference code builds from `datasets.load_dataset`. Without a data directory the
HF hub datasets are used (online users).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.env import REPO_ROOT
from harness.errors import DataError  # noqa: F401  (re-exported)
from harness.hashing import sha256_file



@dataclass(frozen=True)
class Corpus:
    name: str
    files: dict[str, str]              # split -> path relative to the data dir
    reader: str                        # how rows are read from the local file
    joiner: str                        # how rows are joined into one evaluation text
    hub: tuple[str, str | None, str]   # (path, name, text field) for datasets.load_dataset
    eval_split: str = "test"           # the split perplexity is reported on
    eval_docs: int | None = None       # protocol: only the first N rows are evaluated (C4)
    eval_windows: int | None = None    # protocol: text cut at eval_windows * seq_len tokens (C4: 256)
    note: str = ""


CORPORA: dict[str, Corpus] = {
    "wikitext2": Corpus(
        "wikitext2", {"test": "wikitext-2-raw-v1/wiki.test.raw",
                      "validation": "wikitext-2-raw-v1/wiki.valid.raw"},
        reader="wikitext_lines", joiner="\n\n", hub=("wikitext", "wikitext-2-raw-v1", "text")),
    "ptb": Corpus(
        "ptb", {"test": "ptb/ptb.test.txt", "validation": "ptb/ptb.valid.txt"},
        reader="stripped_lines", joiner=" ", hub=("ptb_text_only", "penn_treebank", "sentence")),
    "c4": Corpus(
        "c4", {"train": "c4/c4-train.00000-of-01024.first1041.text.jsonl",
               "validation": "c4/c4-validation.00000-of-00008.first1025.text.jsonl"},
        reader="jsonl_text", joiner=" ", hub=("allenai/c4", "en", "text"), eval_split="validation", eval_docs=1100,
        eval_windows=256,
        note="local files are prefixes of shard 0 (1041 train / 1025 validation docs)"),
}


@dataclass(frozen=True)
class CorpusRows:
    corpus: str
    split: str
    rows: list[str]
    source: str                        # "local:<path>" or "hub:<path>/<name>"
    sha256: str | None                 # of the local file; None for hub data
    variant: str | None = None         # set when the rows differ from the protocol's (prefix files)


def resolve_data_dir(configured: str | None = None) -> Path | None:
    """Config value, else $PRUNEBENCH_DATA_DIR, else ../shared/data beside the repo if present."""
    for candidate in (configured, os.environ.get("PRUNEBENCH_DATA_DIR"), str(REPO_ROOT.parent / "shared" / "data")):
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_dir():
                return path.resolve()
            if candidate == configured:
                raise DataError(f"data directory does not exist: {path}")
    return None


def corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def local_file(name: str, split: str, data_dir: Path | None) -> Path | None:
    c = corpus(name)
    if split not in c.files:
        raise DataError(f"corpus {name!r} has no split {split!r} (available: {', '.join(c.files)})")
    if data_dir is None:
        return None
    path = data_dir / c.files[split]
    return path if path.is_file() else None


def manifest_entry(path: Path) -> dict | None:
    """The entry for `path` in the MANIFEST.json of its folder, or None without a manifest."""
    manifest = path.parent / "MANIFEST.json"
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"unreadable manifest {manifest}: {exc}") from None
    for entry in files:
        if isinstance(entry, dict) and entry.get("file") == path.name:
            return entry
    raise DataError(f"{path.name} is not listed in {manifest}")


_VERIFIED: dict[tuple, str] = {}   # (path, size, mtime_ns) -> sha256, so repeated checks stay cheap


def verified_sha256(path: Path) -> str:
    """sha256 of a data file, checked against its folder's MANIFEST.json (bytes and sha256) when
    there is one: an edited or truncated file is a one-line DataError, never a number."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    entry = manifest_entry(path)
    if entry is not None and entry.get("bytes") is not None and int(entry["bytes"]) != stat.st_size:
        raise DataError(f"data file {path} has {stat.st_size} bytes, its manifest says {entry['bytes']} "
                        "(truncated or edited)")
    digest = sha256_file(path)
    if entry is not None and entry.get("sha256") and entry["sha256"] != digest:
        raise DataError(f"data file {path} does not match its manifest: sha256 {digest}, "
                        f"expected {entry['sha256']}")
    _VERIFIED[key] = digest
    return digest


def data_sha256(name: str, split: str | None, data_dir: Path | None) -> str | None:
    """The verified sha256 of the local file behind corpus/split (None for hub data)."""
    path = local_file(name, split or corpus(name).eval_split, data_dir)
    return verified_sha256(path) if path is not None else None


def check_available(name: str, split: str, data_dir: Path | None) -> None:
    """Validation-time check: the local file exists and matches its manifest, or hub access is possible."""
    path = local_file(name, split, data_dir)
    if path is None and os.environ.get("HF_DATASETS_OFFLINE") == "1":
        where = data_dir / corpus(name).files[split] if data_dir else "(no data directory)"
        raise DataError(f"data for {name}/{split} missing: {where} not found and HF_DATASETS_OFFLINE=1")
    if path is not None:
        verified_sha256(path)


def _read_rows(path: Path, reader: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if reader == "wikitext_lines":
        # The HF wikitext builder keeps '\n' on non-blank rows and turns blank rows into ''.
        return [line + "\n" if line.strip() else "" for line in lines]
    if reader == "stripped_lines":
        return [line.strip() for line in lines]
    if reader == "jsonl_text":
        return [json.loads(line)["text"] for line in lines if line.strip()]
    raise DataError(f"unknown reader {reader!r}")


def load_rows(name: str, split: str, data_dir: Path | None) -> CorpusRows:
    c = corpus(name)
    path = local_file(name, split, data_dir)
    if path is not None:
        digest = verified_sha256(path)
        rows = _read_rows(path, c.reader)
        entry = manifest_entry(path)
        if entry is not None and entry.get("rows") is not None and len(rows) != int(entry["rows"]):
            raise DataError(f"{path} reads as {len(rows)} rows, its manifest says {entry['rows']}")
        variant = None
        if c.eval_docs and split != "train" and len(rows) < c.eval_docs:
            variant = f"first{len(rows)}docs"
        elif c.note:
            variant = "prefix" if split == "train" else None
        return CorpusRows(name, split, rows, f"local:{path}", digest, variant)
    import datasets

    hub_path, hub_name, field_name = c.hub
    kwargs = {}
    if name == "c4":  # the reference scripts read shard 0 only
        shard = "c4-train.00000-of-01024.json.gz" if split == "train" else "c4-validation.00000-of-00008.json.gz"
        kwargs["data_files"] = {split: f"en/{shard}"}
        hub_name = None
    ds = datasets.load_dataset(hub_path, hub_name, split=split, **kwargs)
    return CorpusRows(name, split, list(ds[field_name]), f"hub:{hub_path}/{hub_name}", None)


def eval_text(name: str, split: str | None, data_dir: Path | None) -> tuple[str, CorpusRows]:
    """The single evaluation string of the SparseGPT/Wanda protocol (rows joined by the corpus'
    joiner; C4 uses only its first `eval_docs` documents). split=None: the corpus' eval split."""
    c = corpus(name)
    rows = load_rows(name, split or c.eval_split, data_dir)
    selected = rows.rows[: c.eval_docs] if c.eval_docs else rows.rows
    return c.joiner.join(selected), rows
