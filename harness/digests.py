"""Digests stored beside cache entries, verified every time an entry is used.

A cache entry is either one file (its digest lives in a sidecar `<name>.sha256`) or a directory
(its digest is `.prunebench-digest.json`: {relative path: sha256} of every file in it). The digest
is written when the entry is created, from the bytes just written; an entry whose digest is missing
or does not match is dropped by the caller and rebuilt, so a flipped bit in a cache can never
produce a number (sha256 of a few hundred MB costs well under a second next to a model load).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from harness.files import write_atomic
from harness.hashing import sha256_file

log = logging.getLogger(__name__)

DIR_DIGEST = ".prunebench-digest.json"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_file_digest(path: Path) -> str:
    """Hash `path` and store the digest beside it (atomically); returns the digest."""
    digest = sha256_file(path)
    write_atomic(sidecar(path), digest + "\n")
    return digest


def verify_file(path: Path) -> bool:
    """True when `path` exists and matches the digest written at its creation."""
    side = sidecar(path)
    if not path.is_file() or not side.is_file():
        return False
    try:
        expected = side.read_text().strip()
    except OSError:
        return False
    return bool(expected) and sha256_file(path) == expected


def _dir_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != DIR_DIGEST)


def write_dir_digest(root: Path) -> dict[str, str]:
    digests = {str(p.relative_to(root)): sha256_file(p) for p in _dir_files(root)}
    (root / DIR_DIGEST).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return digests


def verify_dir(root: Path) -> bool:
    """True when every file the digest names is present and unchanged and no file was added."""
    try:
        expected = json.loads((root / DIR_DIGEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(expected, dict):
        return False
    present = {str(p.relative_to(root)) for p in _dir_files(root)}
    if present != set(expected):
        return False
    return all(sha256_file(root / name) == digest for name, digest in expected.items())


def drop(path: Path, why: str) -> None:
    """Remove a cache entry (file + sidecar, or directory) that failed verification."""
    log.warning("cache entry %s dropped (%s); it is rebuilt", path, why)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
        sidecar(path).unlink(missing_ok=True)
