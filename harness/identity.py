"""Run identity: a versioned canonical form of what can change a result, and its hash (the run_id).

Canonical form (IDENTITY_VERSION 2):
  - the config without keys that never change a number (paths, logging, launcher, sweep flags,
    cache reuse, saving the model);
  - section seeds resolved from the top-level seed; a section seed equal to it is dropped;
  - every field equal to its declared default dropped: the schema dataclasses (harness.schema),
    the method / allocator / KV-policy parameter dataclasses and the recovery budget. A key added
    later *at its default* therefore leaves every existing id unchanged;
  - the sha256 of each local data file the run reads (calibration, perplexity, recovery corpus),
    so an edited data file can never share an id with the clean one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping

IDENTITY_VERSION = 2
# Never change a number: not part of the identity.
NON_SEMANTIC_KEYS = ("paths", "hydra", "wandb", "force", "retry_failed", "launcher", "suite", "output")
NON_SEMANTIC_FIELDS = (("prune", "reuse"), ("runtime", "offline"))

# {"method" | "kv" | "allocator": {parameter: default}}, resolved from the config by validation
ParamDefaults = Mapping[str, Mapping]

_FILE_SHA: dict[tuple, str] = {}


def _file_sha(path: Path) -> str:
    """sha256 of a file, memoized by (path, size, mtime): ids are computed for every sweep cell."""
    from harness.hashing import sha256_file

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(path)
    return _FILE_SHA[key]


def data_files(config: dict) -> dict[str, str | None]:
    """{'calib:c4/train': sha256, 'eval:wikitext2/test': sha256, ...} of the local files read
    (None for a hub corpus or a file that is absent here; validation reports those)."""
    from harness.data import CORPORA, DataError, local_file, resolve_data_dir

    try:
        data_dir = resolve_data_dir((config.get("paths") or {}).get("data_dir"))
    except DataError:  # a record's machine path that does not exist here: auto-resolution
        data_dir = resolve_data_dir(None)
    used: list[tuple[str, str, str]] = []
    calib = config.get("calib") or {}
    if calib.get("corpus"):
        used.append(("calib", str(calib["corpus"]), str(calib.get("split") or "train")))
    for section_name in ("ppl", "kv_ppl", "ppl_prompted"):
        section = (config.get("eval") or {}).get(section_name) or {}
        for ds in section.get("datasets") or []:
            if ds in CORPORA:
                used.append(("eval", ds, str(section.get("split") or CORPORA[ds].eval_split)))
    recovery = config.get("recovery") or {}
    if recovery.get("name", "none") != "none" and str(recovery.get("corpus", "")) in CORPORA:
        used.append(("recovery", recovery["corpus"], str(recovery.get("split") or "train")))
    out: dict[str, str | None] = {}
    for role, name, split in used:
        try:
            path = local_file(name, split, data_dir)
        except DataError:
            path = None
        out[f"{role}:{name}/{split}"] = _file_sha(path) if path is not None else None
    return out


def _drop_defaults(section: dict, default: dict) -> dict:
    return {k: v for k, v in section.items() if not (k in default and v == default[k])}


def canonical(config: dict, param_defaults: ParamDefaults, with_seed: bool = True) -> dict:
    """The canonical form hashed into the run_id (with_seed=False: the grid cell over seeds).
    param_defaults: the defaults of the method / KV-policy / allocator parameters the config
    names, resolved by validation (harness.validate.param_defaults, Plan.param_defaults)."""
    from harness.schema import SCHEMAS, defaults, resolve_seeds

    cfg = resolve_seeds(copy.deepcopy({k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS}))
    model = cfg.get("model")
    if isinstance(model, dict) and not model.get("name"):  # model=hf|gguf|local: the name the source gives
        from harness.config import model_name

        model["name"] = model_name(model)
    top_seed = cfg.get("seed", 0)
    for section, key in NON_SEMANTIC_FIELDS:
        if isinstance(cfg.get(section), dict):
            cfg[section].pop(key, None)
    for section in ("calib", "recovery"):
        if isinstance(cfg.get(section), dict) and cfg[section].get("seed") == top_seed:
            cfg[section].pop("seed")  # follows the top-level seed
    if not with_seed:  # the cell over seeds: every seed, top-level or pinned in a section, is out
        cfg.pop("seed", None)
        for section in ("calib", "recovery"):
            if isinstance(cfg.get(section), dict):
                cfg[section].pop("seed", None)
    for dotted, schema in SCHEMAS.items():
        parent, _, leaf = dotted.rpartition(".")
        holder = cfg
        for part in [p for p in parent.split(".") if p]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue
        if not dotted:
            cfg = _drop_defaults(cfg, defaults(schema))
        elif isinstance(holder.get(leaf), dict):
            holder[leaf] = _drop_defaults(holder[leaf], defaults(schema))
    for group in ("method", "kv", "allocator"):
        section = cfg.get(group)
        if isinstance(section, dict) and isinstance(section.get("params"), dict):
            section["params"] = _drop_defaults(section["params"], param_defaults.get(group) or {})
    if (cfg.get("kv") or {}).get("name", "none") == "none":
        cfg.pop("kv", None)
    recovery = cfg.get("recovery")
    if isinstance(recovery, dict) and recovery.get("name", "none") != "none":
        from harness.recovery.budget import Budget
        from harness.schema import defaults as dc_defaults

        cfg["recovery"] = _drop_defaults(recovery, dc_defaults(Budget))
    return {"identity_version": IDENTITY_VERSION, "config": cfg, "data": data_files(config)}


def run_id_for(config: dict, param_defaults: ParamDefaults) -> str:
    blob = json.dumps(canonical(config, param_defaults), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_id_for(config: dict, param_defaults: ParamDefaults) -> str:
    """The grid cell a run belongs to: its identity without the seed (seeds of one cell share it)."""
    blob = json.dumps(canonical(config, param_defaults, with_seed=False), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reindex(results_dir: str | Path, resolve_defaults: Callable[[dict], ParamDefaults]) -> list[str]:
    """Move records written under an earlier identity version to their current run_id.

    A record moves only when every data file its provenance names still has the recorded sha256
    (its number was taken on the data the new id hashes); it keeps its old id as `previous_run_id`.
    resolve_defaults(config): the parameter defaults a config names (harness.validate.param_defaults).
    Returns one line per record looked at."""
    from harness.records import records_dir, write_atomic

    lines = []
    for path in sorted(records_dir(results_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            lines.append(f"{path.name}: unreadable, left as is ({exc})")
            continue
        if not isinstance(record, dict) or record.get("identity_version") == IDENTITY_VERSION:
            continue
        config = record.get("config") or {}
        recorded = (record.get("provenance") or {}).get("data_sha256") or {}
        current = data_files(config)
        stale = [k for k, sha in current.items() if k in recorded and recorded[k] != sha]
        if stale:
            lines.append(f"{path.name}: data changed since the run ({', '.join(stale)}), left as is")
            continue
        new_id = run_id_for(config, resolve_defaults(config))
        record.update(run_id=new_id, identity_version=IDENTITY_VERSION,
                      previous_run_id=record.get("previous_run_id") or path.stem)
        target = path.with_name(f"{new_id}.json")
        if target.exists() and target != path:
            lines.append(f"{path.name}: {target.name} already exists, left as is")
            continue
        write_atomic(target, json.dumps(record, indent=2) + "\n")
        if target != path:
            path.unlink()
        lines.append(f"{path.name} -> {target.name}")
    return lines


if __name__ == "__main__":  # python -m harness.identity <results_dir>: move records to current ids
    import sys

    from harness.validate import param_defaults

    for line in reindex(sys.argv[1] if len(sys.argv) > 1 else "results", param_defaults):
        print(line)
