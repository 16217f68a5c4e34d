"""Progress of long work: a tqdm bar on the terminal and the same facts in the log.

    with Progress("prune sparsegpt", total=n_blocks, unit="block") as p:
        for i in ...:
            ...
            p.advance(**facts)           # block i/N, s/block, ETA, plus any facts (loss=...)

Log lines come at the first and last step and at every step that is at least
`PRUNEBENCH_PROGRESS_EVERY_S` (default 10 s) after the previous step line (so every block when blocks
take longer), and a heartbeat thread writes "still in step i/N (x s)" when a single step runs
longer than `PRUNEBENCH_HEARTBEAT_S` (default 20 s), so a long stage never stays silent for more
than ~30 s. Quiet mode (`PRUNEBENCH_QUIET=1`, for CI): no bars; the log lines stay. Listeners (`add_listener`) receive every step's facts: W&B logs
them live (harness.tracking), the running marker records the current stage (harness.sweep).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable

log = logging.getLogger("prunebench.progress")

_listeners: list[Callable[[str, dict], None]] = []


def quiet() -> bool:
    """PRUNEBENCH_QUIET=1: no bars (CI logs). Entry points also set TQDM_DISABLE=1 then, which
    silences every other tqdm bar (evaluators, lm-eval, transformers)."""
    return os.environ.get("PRUNEBENCH_QUIET", "").lower() in ("1", "true", "yes")


def configure_quiet() -> None:
    if quiet():
        os.environ.setdefault("TQDM_DISABLE", "1")


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def add_listener(fn: Callable[[str, dict], None]) -> None:
    """fn(kind, facts) for every step and stage event; exceptions in it are logged, never raised."""
    _listeners.append(fn)


def remove_listener(fn: Callable[[str, dict], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def emit(kind: str, facts: dict) -> None:
    for fn in list(_listeners):
        try:
            fn(kind, facts)
        except Exception as exc:  # noqa: BLE001 - a listener (W&B, a marker) never fails the work
            log.warning("progress listener %s failed: %s: %s", getattr(fn, "__name__", fn), type(exc).__name__, exc)


def stage(name: str, **facts) -> None:
    """A pipeline stage begins (load, calibrate, prune, recover, measure, evaluate, save)."""
    log.info("stage %s", name)
    emit("stage", {"stage": name, **facts})


def fmt_s(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """One bar + throttled log lines + heartbeat for `total` steps of one kind of work."""

    def __init__(self, desc: str, total: int, unit: str = "step", kind: str | None = None,
                 initial: int = 0, logger: logging.Logger | None = None):
        self.desc, self.total, self.unit = desc, int(total), unit
        self.kind = kind or unit
        self.done = int(initial)
        self.log = logger or log
        self.every_s = _env_seconds("PRUNEBENCH_PROGRESS_EVERY_S", 10.0)
        self.heartbeat_s = _env_seconds("PRUNEBENCH_HEARTBEAT_S", 20.0)
        self.t0 = self.t_step = self.t_line = self.t_step_line = time.monotonic()
        self.last: dict = {}
        self._bar = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "Progress":
        self.log.info("%s: %d %ss", self.desc, self.total, self.unit)
        if not quiet():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit=self.unit,
                             mininterval=1.0, file=sys.stderr, dynamic_ncols=True)
        if self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._heartbeat, name="prunebench-heartbeat", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.done:
            self.log.info("%s: done %d/%d %ss in %s", self.desc, self.done, self.total, self.unit,
                          fmt_s(time.monotonic() - self.t0))

    # -- steps ---------------------------------------------------------------------------------
    def eta_s(self) -> float | None:
        if not self.done:
            return None
        return (time.monotonic() - self.t0) / self.done * max(0, self.total - self.done)

    def advance(self, n: int = 1, **facts) -> dict:
        """Steps finished; returns the facts logged (step, total, step_s, elapsed_s, eta_s, ...)."""
        now = time.monotonic()
        with self._lock:
            step_s = (now - self.t_step) / max(1, n)
            self.done += n
            self.t_step = now
            info = {"step": self.done, "total": self.total, "step_s": step_s,
                    "elapsed_s": now - self.t0, "eta_s": self.eta_s(), **facts}
            self.last = info
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in facts.items())
            if self._bar is not None:
                self._bar.update(n)
                if facts:
                    self._bar.set_postfix_str(extra, refresh=False)
            # a step line every `every_s` (so every step when steps are slower than that), the first
            # and the last; heartbeats in between do not hold them back
            if now - self.t_step_line >= self.every_s or self.done >= self.total or self.done == n:
                self.t_line = self.t_step_line = now
                self.log.info("%s: %s %d/%d, %s/%s, elapsed %s, ETA %s%s", self.desc, self.unit, self.done,
                              self.total, fmt_s(step_s), self.unit, fmt_s(info["elapsed_s"]),
                              fmt_s(info["eta_s"] or 0.0), f", {extra}" if extra else "")
        emit(self.kind, {"desc": self.desc, **info})
        return info

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(5.0, self.heartbeat_s)):
            now = time.monotonic()
            with self._lock:
                if now - self.t_line >= self.heartbeat_s and self.done < self.total:
                    self.t_line = now
                    self.log.info("%s: in %s %d/%d for %s (elapsed %s)", self.desc, self.unit,
                                  self.done + 1, self.total, fmt_s(now - self.t_step), fmt_s(now - self.t0))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
