"""Atomic file writes: the content goes to a temp file beside the target, then one rename puts it in
place, so a reader (or a job killed mid-write) never sees half a file. Temp names start with '.',
which readers of a folder (records, leaderboard) skip."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomic(path: str | Path, content: str | Callable[[Path], None], digest: bool = False) -> None:
    """Write `content` to `path` atomically. Text is fsynced before the rename (records, markers,
    sidecars: small, and the record must survive a crash); a callable writes the temp file itself
    (torch.save, safetensors) and is not fsynced, as those are cache entries that their digest guards.
    digest=True stores the sha256 sidecar (harness.digests) before the file appears, so a file is
    never visible without its digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; results and caches are meant to be shared
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        if digest:
            from harness.digests import sidecar
            from harness.hashing import sha256_file

            write_atomic(sidecar(path), sha256_file(tmp) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
