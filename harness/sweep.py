"""Suites: named Hydra grids (conf/suite/*.yaml) launched as resumable multiruns.

usage: python -m harness.sweep suite=<name> [launcher=<name>] [retry_failed=true] [dry_run=true]
                               [key=value | key=a,b,c ...]

  suite=<name>         a grid in conf/suite/ (demo, tiny, unstructured, depth, ...)
  launcher=<name>      basic (in this process, default) | local (submitit, one process per cell) |
                       slurm (hydra-submitit-launcher, one array task per cell); Hydra's own names
                       (`hydra/launcher=submitit_slurm`, `submitit_local`, `basic`, joblib when
                       installed) are accepted too
  retry_failed=true    also re-run cells whose record is `failed` (default: only missing cells)
  dry_run=true         expand the grid and print every cell's state; launch nothing
  key=value            any run override (model=..., eval=[quick,latency_quick], runtime.threads=1);
  key=a,b              a comma list sweeps that key (replacing the suite's own values for it)
While cells run, a line every PRUNEBENCH_SWEEP_POLL_S seconds (default 15) gives the done / running /
queued / failed counts and the Slurm job ids; PRUNEBENCH_QUIET=1 drops the bar, not the lines.

1. expand the suite's `hydra.sweeper.params` (plus sweep overrides from the command line) into cells
   exactly as Hydra's basic sweeper would, and compose each cell's config;
2. give each cell its run_id (harness.records.run_id_for) and its state: `ok`/`failed`
   from its record, `running` from a live marker, `invalid` when validation rejects the config
   (e.g. dense x nm_2_4: such cells are listed with the reason and never launched), else `missing`;
3. launch the cells without an `ok` record (failed ones only with retry_failed=true, live ones
   never) through the configured Hydra launcher: `basic` (in-process, default), `local` (submitit
   local processes) or `slurm` (hydra-submitit-launcher);
4. read the records back and exit non-zero when any valid cell is not `ok`, listing those cells.
   The launcher's own job status is not trusted (hydra-submitit-launcher can report failed jobs as
   completed, and a cell's failure is a `failed` record, not an exception).

Running markers: a cell writes <results>/running/<run_id>.json (pid, host, Slurm ids) when it starts
and removes it when its record is written; the sweep writes one per launched cell before
submission (its own pid) so a concurrent re-launch does not start the same cell twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import SuiteError  # noqa: F401  (re-exported)

log = logging.getLogger("prunebench.sweep")

LAUNCHERS = {"basic": "basic", "local": "local", "slurm": "slurm"}   # short names; plugin names pass through
SWEEP_ARGS = ("suite", "launcher", "retry_failed", "dry_run")
DONE, FAILED, MISSING, RUNNING, QUEUED, STALE, INVALID = (
    "done", "failed", "missing", "running", "queued", "stale", "invalid")


class HelpRequested(Exception):
    """`--help`/`-h` on the command line: print the module's usage and exit 0."""


def usage(doc: str | None) -> str:
    return (doc or "").split("\n\n1.")[0].strip()



@dataclass
class Cell:
    overrides: list[str]                  # the cell's sweep overrides (key=value), Hydra syntax
    run_id: str | None = None
    config: dict | None = None
    invalid: str | None = None            # ConfigError message when validation rejects the cell
    state: str = MISSING
    detail: str = ""
    record: dict | None = field(default=None, repr=False)


@dataclass
class Suite:
    name: str
    base_overrides: list[str]             # +suite=<name> and the non-sweep command-line overrides
    cells: list[Cell]
    results_dir: Path


# ----------------------------------------------------------------------------------- expansion
def available_suites() -> list[str]:
    from harness.config import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / "suite").glob("*.yaml"))


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """Split `key=value` arguments into the sweep's own options and Hydra overrides."""
    opts: dict = {"suite": None, "launcher": "basic", "retry_failed": False, "dry_run": False}
    overrides = []
    if any(a in ("-h", "--help", "help") for a in argv):
        raise HelpRequested
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "hydra/launcher":
            opts["launcher"] = value
        elif sep and key in SWEEP_ARGS:
            opts[key] = value.lower() in ("1", "true", "yes") if key in ("retry_failed", "dry_run") else value
        else:
            overrides.append(arg)
    if not opts["suite"]:
        raise SuiteError(f"suite=<name> is required; available: {', '.join(available_suites())}")
    if opts["suite"] not in available_suites():
        raise SuiteError(f"unknown suite {opts['suite']!r}; available: {', '.join(available_suites())}")
    if opts["launcher"] not in LAUNCHERS:
        from harness.config import group_options

        known = group_options(["hydra/launcher"])["hydra/launcher"]
        if opts["launcher"] not in known:
            raise SuiteError(f"unknown launcher {opts['launcher']!r}; one of {', '.join(known)}")
    return opts, overrides


def expand_suite(name: str, overrides: list[str] = (), launcher: str = "basic") -> Suite:
    """All cells of a suite with their run ids and current states (nothing is run)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from harness.config import CONF_DIR

    parser = OverridesParser.create()
    try:
        user = parser.parse_overrides(list(overrides))
    except HydraException as exc:
        raise SuiteError(" ".join(str(exc).split())) from None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sweep"):
        base, dims = _suite_dimensions(name, user, launcher)
        check_options(name, parser.parse_overrides(list(dims.values())))
        cells, errors = _compose_cells(base, parser.parse_overrides(list(dims.values())))
    GlobalHydra.instance().clear()
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise SuiteError(f"suite {name}: invalid config: {'; '.join(errors[:3])}{more}")
    results_dir = Path(str(cells[0].config["paths"]["results_dir"])).expanduser().resolve()
    suite = Suite(name, base, cells, results_dir)
    refresh_states(suite)
    return suite


def _suite_dimensions(name: str, user, launcher: str) -> tuple[list[str], OrderedDict[str, str]]:
    """(overrides every cell shares, {swept key: its sweep override}) from the suite's
    hydra.sweeper.params and the command line. Runs inside initialize_config_dir."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    head = [f"+suite={name}", f"hydra/launcher={LAUNCHERS.get(launcher, launcher)}"]
    fixed = [o.input_line for o in user if not o.is_sweep_override()]
    try:
        hcfg = compose("config", overrides=[*head, *fixed], return_hydra_config=True)
    except HydraException as exc:
        raise SuiteError(" ".join(str(exc).split())) from None
    params = OmegaConf.to_container(hcfg.hydra.sweeper.params or {}, resolve=False)
    # A command-line override of a swept key replaces the suite's values (Hydra's own rule);
    # sweep overrides of other keys add dimensions.
    dims: OrderedDict[str, str] = OrderedDict((k, f"{k}={v}") for k, v in params.items())
    for o in user:
        key = o.get_key_element()
        if o.is_sweep_override() or key in dims:
            dims[key] = o.input_line
    base = head + [o.input_line for o in user if not o.is_sweep_override() and o.get_key_element() not in dims]
    return base, dims


def _compose_cells(base: list[str], swept) -> tuple[list[Cell], list[str]]:
    """One cell per combination of the swept values, exactly as Hydra's basic sweeper splits them;
    two spellings of one run id are one cell. Returns the cells and the config errors of the cells
    that are not invalid by grid design. Runs inside initialize_config_dir."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from omegaconf import OmegaConf

    from harness.config import _without_hydra
    from harness.errors import ConfigError
    from harness.records import run_id_for
    from harness.validate import validate

    combos = BasicSweeper.split_arguments(swept, None)[0]
    cells: list[Cell] = []
    seen: set[str] = set()
    errors: list[str] = []
    for combo in combos or [[]]:
        cell = Cell(overrides=list(combo))
        cfg = _without_hydra(compose("config", overrides=base + cell.overrides))
        cell.config = OmegaConf.to_container(cfg, resolve=True)
        cell.run_id = run_id_for(cell.config)
        if cell.run_id in seen:  # two spellings of one experiment: one cell
            continue
        seen.add(cell.run_id)
        cell.invalid = grid_incompatibility(cell.config)
        if cell.invalid is None:
            try:
                validate(cell.config)
            except ConfigError as exc:  # not a grid-design gap: the whole launch stops
                errors.append(f"{' '.join(cell.overrides) or '(no overrides)'}: {exc}")
        cells.append(cell)
    return cells, errors


def grid_incompatibility(config: dict) -> str | None:
    """Why a cartesian-grid cell can never run (a method that cannot produce the target's pattern,
    e.g. dense x nm_2_4); such cells are `invalid` and not launched. Any other config error stops the
    launch (missing data, bad values: those are mistakes, not grid shape)."""
    from harness.targets import Target, allocator_mismatch, pattern_mismatch
    from methods.registry import build_method

    try:
        method = build_method(config["method"]["name"], config["method"].get("params") or {})
        target = Target.from_config(config["target"])
    except (KeyError, ValueError):   # input errors (ConfigError) included
        return None  # validate() reports it
    return pattern_mismatch(method, target.pattern) or \
        allocator_mismatch((config.get("allocator") or {}).get("name", "uniform"), target.pattern)


def check_options(suite: str, overrides) -> None:
    """Every swept config-group option must exist (a suite may name methods not built yet): one
    error listing all missing options, before composing anything."""
    from harness.config import CONF_DIR

    missing = []
    for o in overrides:
        key = o.get_key_element().lstrip("+~")
        group = CONF_DIR / key
        if "." in key or not group.is_dir():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        missing += [f"{key}/{v}" for v in values if not (group / f"{v}.yaml").is_file()]
    if missing:
        raise SuiteError(f"suite {suite} references configs that do not exist: {', '.join(missing)} "
                         f"(restrict the grid on the command line, e.g. method=wanda,magnitude)")


# ------------------------------------------------------------------------------- running markers
def marker_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / "running" / f"{run_id}.json"


def write_marker(results_dir: Path, run_id: str, **extra) -> Path:
    from harness.files import write_atomic
    from harness.run import launcher_ids

    info = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **launcher_ids(), **extra}
    path = marker_path(results_dir, run_id)
    write_atomic(path, json.dumps(info) + "\n")
    return path


def claim_cell(results_dir: Path, run_id: str, retry_failed: bool = False, **extra) -> bool:
    """Atomically claim a cell for this sweep: True when this process now owns it.

    Under an exclusive lock on <results>/running/.claim.lock, a cell with an ok record (or a failed
    one, unless retried) or a live marker is refused; a dead process' marker is removed; the
    marker is created with O_CREAT|O_EXCL, so of two sweeps started together exactly one wins."""
    import fcntl

    from harness.records import existing_status

    path = marker_path(results_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".claim.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            status = existing_status(results_dir, run_id)
            if status == "ok" or (status == "failed" and not retry_failed):
                return False
            if path.exists():
                try:
                    info = json.loads(path.read_text())
                except (OSError, ValueError):
                    info = {}
                if marker_alive(info) is not False:
                    return False
                path.unlink(missing_ok=True)
            from harness.run import launcher_ids

            info = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **launcher_ids(), **extra}
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(info) + "\n")
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _slurm_job_alive(job_id: str) -> bool | None:
    """True/False from squeue; None when Slurm cannot be asked."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:  # an id squeue no longer knows
        return False if "Invalid job id" in out.stderr else None
    return bool(out.stdout.strip())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def marker_alive(info: dict) -> bool | None:
    """Whether the process or Slurm job named by a marker still runs (None: cannot tell)."""
    job = info.get("slurm_job_id")
    if job:
        alive = _slurm_job_alive(job)
        if alive is not None:
            return alive
    host = info.get("host")
    if host == socket.gethostname():
        pids = [info.get("pid"), info.get("sweep_pid")]
        return any(_pid_alive(p) for p in pids if p)
    return None


def refresh_states(suite: Suite) -> None:
    from harness.records import read_record, record_path

    for cell in suite.cells:
        cell.record, cell.detail = None, ""
        if cell.invalid:
            cell.state, cell.detail = INVALID, cell.invalid
            continue
        path = record_path(suite.results_dir, cell.run_id)
        if path.is_file():
            try:
                cell.record = read_record(path)
            except (OSError, ValueError) as exc:
                cell.state, cell.detail = FAILED, f"unreadable record: {exc}"
                continue
            status = cell.record["status"]
            cell.state = {"ok": DONE, "failed": FAILED}[status]
            err = cell.record.get("error") or {}
            if err:
                cell.detail = f"{err.get('stage')}: {err.get('type')}: {str(err.get('message'))[:200]}"
            if cell.state != FAILED:
                _clear_dead_marker(suite.results_dir, cell.run_id)  # a job killed after its record
                continue
        marker = marker_path(suite.results_dir, cell.run_id)
        if marker.is_file():
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                info = {}
            alive = marker_alive(info)
            if info.get("submitted"):  # claimed by a sweep, the job has not started yet
                where = f"queued by sweep pid {info.get('sweep_pid')} on {info.get('host')}" + (
                    f", slurm job {info['slurm_job']}" if info.get("slurm_job") else "")
            else:
                where = f"{running_stage(info)}pid {info.get('pid')} on {info.get('host')}" + (
                    f", slurm job {slurm_job(info)}" if info.get("slurm_job_id") else "")
            if alive or alive is None:
                cell.state = QUEUED if info.get("submitted") else RUNNING
                cell.detail = where + (" (unverified)" if alive is None else "")
            elif cell.state != FAILED:
                cell.state, cell.detail = STALE, f"marker left by a dead process ({where})"


def slurm_job(info: dict) -> str:
    """`<array job>_<task>` for array tasks (what squeue and scancel print), else the job id."""
    if info.get("slurm_array_job_id") and info.get("slurm_array_task_id") is not None:
        return f"{info['slurm_array_job_id']}_{info['slurm_array_task_id']}"
    return str(info.get("slurm_job_id"))


def running_stage(info: dict) -> str:
    """'stage prune for 3m05s (block 12/30, ETA 4m10s), ' from a live marker (run_cell keeps it current)."""
    from harness.progress import fmt_s

    if not info.get("stage"):
        return ""
    since = _age_s(info.get("stage_started_at"))
    step = f" ({info['step']})" if info.get("step") else ""
    return f"stage {info['stage']}" + (f" for {fmt_s(since)}" if since is not None else "") + step + ", "


def _age_s(stamp: str | None) -> float | None:
    import calendar

    if not stamp:
        return None
    try:
        return time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def _clear_dead_marker(results_dir: Path, run_id: str) -> None:
    path = marker_path(results_dir, run_id)
    if not path.is_file():
        return
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if marker_alive(info) is False:
        path.unlink(missing_ok=True)


def pending(suite: Suite, retry_failed: bool) -> list[Cell]:
    """Cells a launch runs: no ok record, not running, valid; failed ones only when asked."""
    todo = {MISSING, STALE} | ({FAILED} if retry_failed else set())
    return [c for c in suite.cells if c.state in todo]


# ------------------------------------------------------------------------------------- the task
class LiveMarker:
    """Progress listener keeping a cell's running marker current: stage, when it began, and the
    latest step (block 12/30, ETA ...), written at most every few seconds (harness.status reads it)."""

    def __init__(self, results_dir: Path, run_id: str, every_s: float = 5.0):
        self.results_dir, self.run_id, self.every_s = results_dir, run_id, every_s
        self.info: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.t_write = 0.0

    def __call__(self, kind: str, facts: dict) -> None:
        from harness.progress import fmt_s

        if kind == "stage":
            self.info = {"started_at": self.info["started_at"], "stage": facts["stage"],
                         "stage_started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        else:
            eta = facts.get("eta_s")
            self.info["step"] = (f"{facts.get('desc', kind)} {facts['step']}/{facts['total']}"
                                 + (f", ETA {fmt_s(eta)}" if eta is not None else ""))
            if time.monotonic() - self.t_write < self.every_s:
                return
        self.t_write = time.monotonic()
        write_marker(self.results_dir, self.run_id, **self.info)


def run_cell(cfg) -> dict:
    """The Hydra task of one cell (pickled by submitit, so module-level): marker, run, record."""
    from omegaconf import OmegaConf

    from harness.progress import add_listener, configure_quiet, remove_listener
    from harness.records import run_id_for
    from harness.run import run_experiment
    from harness.errors import ConfigError

    configure_quiet()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = OmegaConf.to_container(cfg, resolve=True)
    run_id = run_id_for(config)
    results_dir = Path(str(config["paths"]["results_dir"])).expanduser().resolve()
    marker = write_marker(results_dir, run_id)
    live = LiveMarker(results_dir, run_id)
    add_listener(live)
    try:
        record = run_experiment(cfg)
    except ConfigError as exc:  # validated before launch; only a changed environment gets here
        log.error("cell %s: config error: %s", run_id, exc)
        return {"run_id": run_id, "status": "invalid", "error": str(exc)}
    finally:
        remove_listener(live)
        marker.unlink(missing_ok=True)
    return {"run_id": run_id, "status": record["status"]}


# ------------------------------------------------------------------------------------ launching
def launch(suite: Suite, cells: list[Cell], sweep_dir: Path, retry_failed: bool = False) -> list[Cell]:
    """Run `cells` through the suite's Hydra launcher (what a Hydra multirun does after its
    sweeper has expanded the grid). Only the cells this sweep claims (claim_cell) are launched;
    returns them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext, RunMode
    from hydra._internal.callbacks import Callbacks

    from harness.config import CONF_DIR

    overrides = list(suite.base_overrides) + [f"hydra.sweep.dir={sweep_dir}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sweep"):
        gh = GlobalHydra.instance().hydra
        setup_globals()
        # composed with one cell's own overrides too: a shared override of a swept group's key
        # (method=llm_surgeon method.params.piece_size=128) only exists once the group is chosen
        first = suite.cells[0].overrides if suite.cells else []
        cfg = gh.compose_config("config", overrides + first, run_mode=RunMode.MULTIRUN,
                                with_log_configuration=False)
        callbacks = Callbacks(cfg)
        launcher_obj = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=gh.config_loader, callbacks=callbacks),
            task_function=run_cell, config=cfg)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # claimed before submission, atomically: a concurrent launch sees them as running
        cells = [c for c in cells if claim_cell(suite.results_dir, c.run_id, retry_failed,
                                                sweep_pid=os.getpid(), pid=None, submitted=True)]
        (sweep_dir / "cells.json").write_text(json.dumps(
            [{"run_id": c.run_id, "overrides": c.overrides} for c in cells], indent=1) + "\n")
        if not cells:
            GlobalHydra.instance().clear()
            return cells
        monitor = SweepMonitor(Suite(suite.name, suite.base_overrides, list(cells), suite.results_dir),
                               sweep_dir)
        monitor.start()
        try:
            # As Hydra's sweeper does: each job gets the task overrides plus its own (the
            # launcher re-composes a job from the hydra.* overrides and these).
            task = [str(o) for o in cfg.hydra.overrides.task]
            task = task[:len(task) - len(first)]        # the shared ones; each cell adds its own
            launcher_obj.launch([task + c.overrides for c in cells], initial_job_idx=0)
        except Exception as exc:  # noqa: BLE001 - job errors are read from the records below
            log.error("launcher raised %s: %s (states are read from the records)", type(exc).__name__,
                      " ".join(str(exc).split())[:500])
        finally:
            monitor.stop()
            for c in cells:  # markers a job never replaced (never started, or died) are cleared
                m = marker_path(suite.results_dir, c.run_id)
                try:
                    if json.loads(m.read_text()).get("sweep_pid") == os.getpid():
                        m.unlink(missing_ok=True)
                except (OSError, ValueError):
                    pass
    GlobalHydra.instance().clear()
    return cells


def identical_seed_draws(suite: Suite) -> list[str]:
    """Cells that differ only in their seed but calibrated on identical token ids: their spread
    over seeds says nothing (the seed never reached the draw)."""
    from harness.identity import cell_id_for
    from harness.validate import param_defaults

    groups: dict[str, list[Cell]] = {}
    for c in suite.cells:
        if c.state == DONE and c.record and (c.record.get("calibration") or {}).get("tokens_sha256"):
            config = c.config or c.record.get("config") or {}
            groups.setdefault(cell_id_for(config, param_defaults(config)), []).append(c)
    out = []
    for cells in groups.values():
        seeds = {c.record["config"].get("seed") for c in cells}
        hashes = {c.record["calibration"]["tokens_sha256"] for c in cells}
        if len(seeds) > 1 and len(hashes) == 1:
            out.append(f"seeds {sorted(seeds, key=str)} of cell {' '.join(cells[0].overrides)} calibrated on "
                       "identical tokens (the seed does not reach calibration)")
    return out


class SweepMonitor:
    """While a launch runs: every PRUNEBENCH_SWEEP_POLL_S seconds (default 15) one line with the
    launched cells' done / running / queued / failed counts and the job ids (submitit's job folders:
    Slurm `<array job>_<task>` ids, or local process ids), plus a bar of finished cells."""

    def __init__(self, suite: Suite, sweep_dir: Path, every_s: float | None = None):
        import threading

        self.suite, self.sweep_dir = suite, sweep_dir
        self.every_s = every_s if every_s is not None else float(os.environ.get("PRUNEBENCH_SWEEP_POLL_S", 15))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prunebench-sweep-monitor", daemon=True)
        self._bar = None
        self.lines: list[str] = []

    def start(self) -> None:
        from harness.progress import quiet

        if not quiet():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(self.suite.cells), desc=f"sweep {self.suite.name}", unit="cell",
                             file=sys.stderr)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.report()
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.report()

    def job_ids(self) -> list[str]:
        folder = self.sweep_dir / ".submitit"
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and "%" not in p.name),
                      key=lambda j: [int(x) if x.isdigit() else 0 for x in j.split("_")])

    def _tag_queued(self, jobs: list[str]) -> None:
        """Array task `<job>_<i>` runs the i-th launched cell: a queued cell's marker gets its job id."""
        import re

        for job in jobs:
            m = re.fullmatch(r"(\d+)_(\d+)", job)
            if not m or int(m.group(2)) >= len(self.suite.cells):
                continue
            cell = self.suite.cells[int(m.group(2))]
            path = marker_path(self.suite.results_dir, cell.run_id)
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if info.get("submitted") and info.get("slurm_job") != job:
                from harness.files import write_atomic

                write_atomic(path, json.dumps({**info, "slurm_job": job}) + "\n")

    def report(self) -> str:
        try:
            refresh_states(self.suite)
        except Exception as exc:  # noqa: BLE001 - a progress line never stops a sweep
            log.warning("sweep progress: %s: %s", type(exc).__name__, exc)
            return ""
        jobs = self.job_ids()
        self._tag_queued(jobs)
        n = len(self.suite.cells)
        c = summary(self.suite)
        finished = c.get(DONE, 0) + c.get(FAILED, 0)
        shown = ", ".join(jobs[:8]) + (f", ... ({len(jobs)} jobs)" if len(jobs) > 8 else "")
        line = (f"prunebench: sweep {self.suite.name}: {c.get(DONE, 0)}/{n} done, {c.get(RUNNING, 0)} running, "
                f"{c.get(QUEUED, 0) + c.get(MISSING, 0) + c.get(STALE, 0)} queued, {c.get(FAILED, 0)} failed"
                + (f"; jobs: {shown}" if jobs else ""))
        self.lines.append(line)
        log.info("%s", line.removeprefix("prunebench: "))
        if self._bar is not None:
            self._bar.n = finished
            self._bar.refresh()
        return line


def format_table(suite: Suite) -> str:
    rows = [("run_id", "state", "cell", "detail")]
    for c in suite.cells:
        rows.append((c.run_id or "-", c.state, " ".join(c.overrides), c.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
                     for r in rows)


def summary(suite: Suite) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in suite.cells:
        out[c.state] = out.get(c.state, 0) + 1
    return out


def main(argv: list[str] | None = None) -> int:
    from harness.env import configure_offline, offline_from_argv
    from harness.progress import configure_quiet

    configure_offline(offline_from_argv(sys.argv[1:] if argv is None else argv))
    configure_quiet()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        opts, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
        suite = expand_suite(opts["suite"], overrides, opts["launcher"])
    except HelpRequested:
        print(usage(__doc__))
        return 0
    except SuiteError as exc:
        print(f"prunebench: suite error: {exc}", file=sys.stderr)
        return 2
    todo = pending(suite, opts["retry_failed"])
    counts = summary(suite)
    print(f"prunebench: suite {suite.name}: {len(suite.cells)} cells {counts}; "
          f"launching {len(todo)} via {opts['launcher']}")
    for c in suite.cells:
        if c.state == INVALID:
            print(f"prunebench: invalid cell (not launched): {' '.join(c.overrides)}: {c.invalid}")
    if todo and not opts["dry_run"]:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        sweep_dir = suite.results_dir / "logs" / "sweeps" / suite.name / f"{stamp}_{os.getpid()}"
        print(f"prunebench: launching: {' '.join(c.run_id for c in todo)} (logs: {sweep_dir})")
        launched = launch(suite, todo, sweep_dir, opts["retry_failed"])
        if len(launched) < len(todo):
            print(f"prunebench: {len(todo) - len(launched)} cells claimed by another sweep, not launched here")
    refresh_states(suite)
    print(format_table(suite))
    for warning in identical_seed_draws(suite):
        print(f"prunebench: WARNING: {warning}", file=sys.stderr)
    bad = [c for c in suite.cells if c.state not in (DONE, INVALID)]
    counts = summary(suite)
    print(f"prunebench: suite {suite.name}: {counts}")
    if not opts["dry_run"] and bad:
        for c in bad:
            print(f"prunebench: NOT OK {c.run_id} {c.state}: {' '.join(c.overrides)} {c.detail}",
                  file=sys.stderr)
        return 1
    if all(c.state == INVALID for c in suite.cells):
        print(f"prunebench: every cell of suite {suite.name} is invalid", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
