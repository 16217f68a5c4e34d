"""Typed schemas of the config groups: every numeric field is checked, naming its key, before any
model loads.

Groups with a fixed shape have a dataclass here (top level, runtime, prune, calib, the perplexity
sections of eval); a field's type annotation gives its type, `metadata["min"]` its lower bound, and
its default is what run identity treats as "not set" (harness.identity). Groups whose keys depend on
the chosen option (method/allocator/kv params, recovery, target, other eval sections) are checked
against the type every conf/<group>/*.yaml gives the same key: a key that is a number in the
shipped configs must stay a number (so `target.ratio=abc` is one line naming `target.ratio`).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from numbers import Number
from pathlib import Path

from harness.errors import SchemaError  # noqa: F401  (raised here; importable from here as before)


def _min(bound):
    return field(default=None, metadata={"min": bound})


@dataclass
class TopLevel:
    seed: int = field(default=0, metadata={"min": 0})
    force: bool = False
    retry_failed: bool = True


@dataclass
class Runtime:
    threads: int | None = _min(1)
    device: str = "auto"
    devices: list | None = None    # several devices: calibration micro-batches spread (harness.blocks.spread)
    dtype: str = "auto"
    offline: bool = True


@dataclass
class Prune:
    propagation: str = "pruned"
    batch_size: int = field(default=1, metadata={"min": 1})
    reuse: bool = True


@dataclass
class Output:
    save_model: bool = False


@dataclass
class Calib:
    corpus: str = "c4"
    split: str = "train"
    n_samples: int = field(default=128, metadata={"min": 1})
    seq_len: int = field(default=2048, metadata={"min": 2})
    seed: int | None = _min(0)          # None: the top-level seed
    mode: str = "reference"
    allow_eval_split: bool = False     # calibrating on an evaluation split needs this, and is recorded


@dataclass
class PplSection:                      # eval.ppl and eval.kv_ppl
    datasets: list = field(default_factory=list)
    split: str | None = None
    seq_len: int = field(default=2048, metadata={"min": 2})
    max_windows: int | None = _min(1)  # None: every window of the text (0 is not "all": rejected)
    batch_size: int = field(default=1, metadata={"min": 1})
    chunk: int | None = _min(1)


# dotted section -> schema; identity defaults come from the same classes
SCHEMAS: dict[str, type] = {"": TopLevel, "runtime": Runtime, "prune": Prune, "output": Output,
                            "calib": Calib, "eval.ppl": PplSection, "eval.kv_ppl": PplSection}
# top-level keys that are groups, not fields of TopLevel
GROUPS = ("runtime", "prune", "output", "calib", "eval", "model", "method", "target", "allocator", "recovery",
          "kv", "paths", "wandb", "hydra", "launcher", "suite")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _type_words(annotation: str) -> tuple[str, bool]:
    """('int'|'float'|'bool'|'str'|'list', nullable) from a field's annotation string."""
    parts = [p.strip() for p in str(annotation).split("|")]
    nullable = "None" in parts
    base = next((p for p in parts if p != "None"), "str")
    return base, nullable


def check_value(key: str, value, kind: str, nullable: bool, minimum=None) -> None:
    if value is None:
        if nullable:
            return
        raise SchemaError(f"{key} must be set (got null)")
    if kind == "int":
        if not _is_int(value):
            raise SchemaError(f"{key} must be an integer, got {value!r}")
    elif kind == "float":
        if not _is_num(value) or not math.isfinite(float(value)):
            raise SchemaError(f"{key} must be a finite number, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise SchemaError(f"{key} must be true or false, got {value!r}")
    elif kind == "list":
        if not isinstance(value, (list, tuple)):
            raise SchemaError(f"{key} must be a list, got {value!r}")
    if minimum is not None and value < minimum:
        raise SchemaError(f"{key} must be >= {minimum}, got {value!r}")


def check_section(prefix: str, section: dict, schema: type) -> None:
    known = {f.name: f for f in fields(schema)}
    for name, value in section.items():
        f = known.get(name)
        if f is None:
            continue  # keys outside the schema are checked against the shipped YAML types below
        kind, nullable = _type_words(f.type)
        check_value(f"{prefix}.{name}" if prefix else name, value, kind, nullable, f.metadata.get("min"))


def defaults(schema: type) -> dict:
    out = {}
    for f in fields(schema):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


@lru_cache(maxsize=1)
def shipped_types() -> dict[str, set[str]]:
    """{dotted key: kinds seen} over every conf/<group>/*.yaml (e.g. 'target.ratio': {'float'})."""
    import yaml

    from harness.config import CONF_DIR

    kinds: dict[str, set[str]] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
            return
        if node is None:
            return
        kind = ("bool" if isinstance(node, bool) else "int" if _is_int(node) else "float" if _is_num(node)
                else "list" if isinstance(node, list) else "str")
        kinds.setdefault(prefix, set()).add(kind)

    for group_dir in sorted(p for p in Path(CONF_DIR).iterdir() if p.is_dir()):
        if group_dir.name in ("hydra", "suite", "paths", "local"):
            continue
        for path in sorted(group_dir.glob("*.yaml")):
            try:
                walk(group_dir.name, yaml.safe_load(path.read_text()) or {})
            except yaml.YAMLError:
                continue
    return kinds


def _check_shipped(prefix: str, node) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _check_shipped(f"{prefix}.{k}", v)
        return
    seen = shipped_types().get(prefix)
    if not seen or node is None or "str" in seen:
        return
    if seen <= {"int"} and not _is_int(node):
        raise SchemaError(f"{prefix} must be an integer, got {node!r}")
    if seen <= {"int", "float"} and not (_is_num(node) and math.isfinite(float(node))):
        raise SchemaError(f"{prefix} must be a number, got {node!r}")
    if seen == {"bool"} and not isinstance(node, bool):
        raise SchemaError(f"{prefix} must be true or false, got {node!r}")


def check_config(config: dict) -> None:
    """Every field of every group; raises SchemaError (one line naming the key)."""
    check_section("", {k: v for k, v in config.items() if k not in GROUPS}, TopLevel)
    for dotted, schema in SCHEMAS.items():
        if not dotted:
            continue
        node = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            check_section(dotted, node, schema)
    for group in ("target", "method", "allocator", "kv", "recovery", "eval", "calib"):
        if isinstance(config.get(group), dict):
            _check_shipped(group, config[group])


def resolve_seeds(config: dict) -> dict:
    """The top-level seed drives every section that does not pin its own (calib.seed and
    recovery.seed null): a seed sweep changes the calibration draw and the training order."""
    seed = config.get("seed", 0)
    out = dict(config)
    for section in ("calib", "recovery"):
        if isinstance(out.get(section), dict) and out[section].get("seed") is None and (
                section != "recovery" or out[section].get("name", "none") != "none"):
            out[section] = {**out[section], "seed": seed}
    return out
