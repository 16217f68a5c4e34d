"""Weights & Biases logging of every run: config, tags, metrics, timings. Offline by default.

One W&B run per record, opened when the run starts (`start_run`) and finished with the record
(`track_run`):
  config    flat: `method.name`, `method.params.blocksize`, `target.ratio`, `calib.n_samples`, ...
            (the resolved run config) plus run_id, pruning_id and the method's tags (`tags.type`, ...)
  group     the suite name (`harness.sweep suite=demo` groups its cells), else the model name
  job_type  `prune` (harness.run: the whole pipeline) or `evaluate` (harness.evaluate of a saved model)
  tags      method:/target:/model:/status: plus the method's Awesome-LLMs-Pruning tags
  history   while the run works: per pruned block `prune/block`, `prune/block_s`, `prune/eta_s`; per
            recovery step `recovery/step`, `recovery/loss`, `recovery/lr`; at the end one row of
            the record's numbers, which are also the run's summary

Config (conf/config.yaml):  wandb: {mode: ${oc.env:WANDB_MODE,offline}, project: prunebench, dir: <results>},
parsed once by validation into `Plan.tracking` (harness.validate.TrackingPlan); the config itself is only logged.
  mode offline   the run is written to <dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb; no key, no network.
                 Upload later with `wandb sync <dir>/wandb/offline-run-*` (after `wandb login`).
  mode online    logs live (needs a key from `wandb login`; prunebench never reads or records one).
  mode disabled  nothing is logged.
A failure here never fails the run: it is logged as a warning and the record stands.

`read_offline_run(run_dir)` reads a .wandb file back (config, summary, history, tags) with wandb's own
protobuf messages. wandb >= 0.20 ships its reader in the Go core only, so the framing (a LevelDB-style
log of 32 KiB blocks with 7-byte record headers after a 7-byte ':W&B' file header) is parsed here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.validate import TrackingPlan

log = logging.getLogger("prunebench.tracking")

MODES = ("offline", "online", "disabled")


def flat_numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested dict as {'a/b/c': value} (W&B's panel grouping uses '/')."""
    out: dict[str, float] = {}
    for k, v in (tree or {}).items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flat_numbers(v, key))
        elif isinstance(v, Number) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out[key] = float(v)
    return out


def flat_config(tree: dict, prefix: str = "") -> dict:
    """Nested config as {'method.params.blocksize': 128, ...}: one column per setting in W&B tables."""
    out: dict = {}
    for k, v in (tree or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flat_config(v, key))  # an empty section ({} params) has no column
        else:
            out[key] = v
    return out


def run_config(config: dict, record: dict) -> dict:
    """The W&B config of a run: the resolved run config, flat, plus identity and the method's tags."""
    from harness.records import NON_SEMANTIC_KEYS

    cfg = {k: v for k, v in (config or {}).items() if k not in NON_SEMANTIC_KEYS or k == "suite"}
    method = record.get("method") or {}
    return {**flat_config(cfg), "run_id": record.get("run_id"), "pruning_id": record.get("pruning_id"),
            "evaluated_from": (record.get("evaluated_from") or {}).get("run_id"),
            **{f"tags.{axis}": v for axis, v in _tag_axes(record).items()},              # the run's
            **{f"method.tags.{axis}": v for axis, v in (method.get("tags") or {}).items()},  # the paper's
            "method.version": method.get("version"), "method.paper": method.get("paper")}


def run_tags(record: dict) -> list[str]:
    method, target, model = record.get("method") or {}, record.get("target") or {}, record.get("model") or {}
    tags = [f"method:{method.get('name')}", f"target:{target.get('name')}", f"model:{model.get('name')}"]
    # the run's tags (what ran: pattern, recovery) where the record has them, else the paper's
    tags += [f"{axis}:{v}" for axis, v in _tag_axes(record).items() if v and axis != "qualifier"]
    return [t[:64] for t in tags]  # W&B tags are at most 64 characters


def _tag_axes(record: dict) -> dict:
    return record.get("tags") or (record.get("method") or {}).get("tags") or {}


def run_payload(record: dict) -> dict:
    """What one finished run logs: config, tags, and summary numbers (metrics, measured, timing, memory)."""
    method, model = record.get("method") or {}, record.get("model") or {}
    tags = run_tags(record) + [f"status:{record.get('status')}"]
    measured = {k: v for k, v in (record.get("measured") or {}).items() if k != "per_layer"}
    summary = {**flat_numbers(record.get("metrics") or {}, "metrics"), **flat_numbers(measured, "measured"),
               **flat_numbers(record.get("timing") or {}, "timing"), **flat_numbers(record.get("memory") or {}, "memory")}
    summary["status_ok"] = float(record.get("status") == "ok")
    env = record.get("env") or {}
    config = {**run_config(record.get("config") or {}, record), "model.family": model.get("family"),
              **flat_config({k: env.get(k) for k in ("device", "dtype", "threads", "git", "libraries")}, "env")}
    return {"config": config, "tags": tags, "summary": summary}


def resolve_mode(configured: str | None) -> str:
    """The configured mode, else $WANDB_MODE (read when the run is logged), else offline."""
    mode = configured or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":  # wandb's old name for offline
        mode = "offline"
    if mode not in MODES:
        raise ValueError(f"wandb.mode={mode!r}; choose one of {', '.join(MODES)}")
    return mode


class LiveRun:
    """An open W&B run; as a harness.progress listener it logs block timings and recovery steps
    while they happen (online: live charts; offline: the same history, uploaded by `wandb sync`)."""

    def __init__(self, run, mode: str):
        self.run, self.mode = run, mode
        run.define_metric("prune/block")
        run.define_metric("prune/*", step_metric="prune/block")
        run.define_metric("recovery/step")
        run.define_metric("recovery/*", step_metric="recovery/step")

    def __call__(self, kind: str, facts: dict) -> None:
        if kind == "block":
            self.run.log({"prune/block": facts["step"], "prune/block_s": facts["step_s"],
                          "prune/eta_s": facts.get("eta_s") or 0.0, "prune/elapsed_s": facts["elapsed_s"]})
        elif kind == "recovery_step":
            row = {"recovery/step": facts["step"], "recovery/step_s": facts["step_s"]}
            row.update({f"recovery/{k}": v for k, v in facts.items() if k in ("loss", "lr")})
            self.run.log(row)
        elif kind == "stage":
            self.run.summary["stage"] = facts["stage"]


def start_run(tracking: TrackingPlan, seed: int, config: dict, record: dict) -> LiveRun | None:
    """Open the run's W&B run and subscribe it to progress events (None when disabled or failing).
    `tracking` and `seed` decide where and under which name it is logged; `config` is only logged."""
    try:
        mode = resolve_mode(tracking.mode)
        if mode == "disabled":
            return None
        live = LiveRun(_init(tracking, mode, seed, config, record), mode)
        from harness.progress import add_listener

        add_listener(live)
        return live
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
        log.warning("W&B logging failed (the run and its record are unaffected): %s: %s", type(exc).__name__, exc)
        return None


def track_run(tracking: TrackingPlan, seed: int, config: dict, record: dict,
              live: LiveRun | None = None) -> Path | None:
    """Log one finished run (into `live` when start_run opened it). Returns the offline run
    directory (None when disabled or on failure)."""
    try:
        mode = resolve_mode(tracking.mode)
        if mode == "disabled":
            return None
        return _log(tracking, mode, seed, config, record, live)
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
        log.warning("W&B logging failed (the run and its record are unaffected): %s: %s", type(exc).__name__, exc)
        return None
    finally:
        if live is not None:
            from harness.progress import remove_listener

            remove_listener(live)


def _init(tracking: TrackingPlan, mode: str, seed: int, config: dict, record: dict):
    import wandb

    root = Path(tracking.dir)
    root.mkdir(parents=True, exist_ok=True)
    # a unique id per execution: re-running a cell (force, reproduce) must not overwrite the earlier log
    run_key = f"{record['run_id']}-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    name = "-".join(str(x) for x in ((record.get("method") or {}).get("name"), (record.get("target") or {}).get("name"),
                                      (record.get("model") or {}).get("name"), f"s{seed}"))
    group = tracking.group or (record.get("model") or {}).get("name")
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                              x_disable_meta=True, disable_git=True)
    return wandb.init(mode=mode, project=tracking.project, entity=tracking.entity,
                      dir=str(root), id=run_key, name=name.replace("/", "_"), group=str(group),
                      job_type="evaluate" if record.get("evaluated_from") else "prune",
                      config=run_config(config, record), tags=run_tags(record), settings=settings,
                      reinit="finish_previous")


def _log(tracking: TrackingPlan, mode: str, seed: int, config: dict, record: dict,
         live: LiveRun | None) -> Path | None:
    payload = run_payload(record)
    run = live.run if live is not None else _init(tracking, mode, seed, config, record)
    try:
        run.tags = tuple(payload["tags"])
        run.config.update(payload["config"], allow_val_change=True)
        run.log(payload["summary"])
        run.summary.update(payload["summary"])
        run_dir = Path(run.dir).parent  # run.dir is <run dir>/files
        run_key = run.id
    finally:
        run.finish(exit_code=0 if record.get("status") == "ok" else 1)
    _wait_written(run_dir)
    log.info("W&B %s run %s -> %s", mode, run_key, run_dir)
    return run_dir


def _wait_written(run_dir: Path, timeout_s: float = 20.0) -> None:
    """finish() can return before wandb-core has flushed the log; wait for its exit record so the
    directory is complete (readable, syncable) when the run's process goes on or ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_records(_wandb_file(run_dir))):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    log.warning("W&B log in %s still incomplete after %.0f s", run_dir, timeout_s)


# -- reading an offline run back --------------------------------------------------------------------
_BLOCK = 32768
_HEADER = 7                           # crc32c (4) + length (2, little endian) + type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_file(run_dir: Path) -> Path:
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    return files[0]


def iter_records(path: str | Path):
    """The protobuf Records of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = 7, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == _FULL:
            pending = chunk
        elif kind == _FIRST:
            pending = chunk
            continue
        elif kind == _MIDDLE:
            pending += chunk
            continue
        elif kind == _LAST:
            pending += chunk
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")
        rec = pb.Record()
        rec.ParseFromString(pending)
        yield rec


def _json(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def read_offline_run(run_dir: str | Path) -> dict:
    """{'id', 'tags', 'config', 'summary', 'history'} from an offline run directory."""
    out: dict = {"id": None, "tags": [], "config": {}, "summary": {}, "history": []}
    for rec in iter_records(_wandb_file(Path(run_dir))):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["id"] = rec.run.run_id
            out["tags"] = list(rec.run.tags)
            for item in rec.run.config.update:
                out["config"][item.key] = _json(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = _json(item.value_json)
        elif kind == "history":
            out["history"].append({item.key or "/".join(item.nested_key): _json(item.value_json)
                                   for item in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = _json(item.value_json)
    out["config"] = {k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
                     for k, v in out["config"].items() if not k.startswith("_")}
    return out


def offline_runs(root: str | Path, run_id: str | None = None) -> list[Path]:
    """Offline run directories under <root>/wandb, oldest first (optionally of one record's run_id)."""
    pattern = re.compile(rf"offline-run-\d+_\d+-{re.escape(run_id)}-" if run_id else r"offline-run-")
    base = Path(root) / "wandb"
    return sorted(p for p in base.glob("offline-run-*") if p.is_dir() and pattern.match(p.name)) if base.is_dir() else []
