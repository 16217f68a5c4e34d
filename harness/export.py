"""Saving a pruned model: weights, a model card, pruning metadata; and loading it back.

`output.save_model=true` writes <results_dir>/models/<run_id>/ with
  config.json, tokenizer files, *.safetensors   the pruned model (output.format, below)
  pruning_metadata.json                          run id, pruning id, method (name, version, paper,
                                                 reference, params, tags), target, measured sparsity,
                                                 calibration, metrics, provenance, resolved config
  README.md                                      a model card with the same facts and the command
                                                 that reproduces the run
output.format:
  safetensors  (default) dense tensors with zeros where pruned; loads with transformers alone
  compressed   the compressed-tensors format that llm-compressor writes and vLLM reads: 2:4 targets
               as `sparse-24-bitmask`, other unstructured / N:M targets as `sparse-bitmask` (values
               + a bitmask per pruned linear, the rest of the model dense). compressed-tensors removed
               its sparse compressors in 0.15, so prunebench pins compressed-tensors<0.15.
`load_saved(model_dir)` reloads either format (the compressed one through compressed-tensors'
ModelCompressor.decompress); tests compare its logits with the in-memory pruned model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "compressed")
METADATA_FILE = "pruning_metadata.json"
COMPRESSIBLE_PATTERNS = ("unstructured", "nm")


class ExportError(ValueError):
    """A model that cannot be saved in the requested format (one line)."""


class ExportFormatError(ExportError, ConfigError):
    """output.format unknown or unfit for the target: an input error, found during validation."""


def check_format(fmt: str, pattern: str) -> None:
    """Validation before any work: the format exists and fits the target's pattern."""
    if fmt not in FORMATS:
        raise ExportFormatError(f"output.format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if fmt == "compressed" and pattern not in COMPRESSIBLE_PATTERNS:
        raise ExportFormatError(f"output.format=compressed stores unstructured and N:M sparsity; a {pattern!r} "
                          f"target removes weights physically: use output.format=safetensors")


def _sparse_linears(model: nn.Module, adapter) -> list[str]:
    """Full module names of the block linears the pruning loop masks."""
    ids = {id(lin): None for block in adapter.blocks(model) for lin in adapter.linears(block).values()}
    return [name for name, mod in model.named_modules() if id(mod) in ids]


def _compressor(model: nn.Module, adapter, target: dict, sparsity: float):
    from compressed_tensors import ModelCompressor
    from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig

    names = _sparse_linears(model, adapter)
    if target.get("pattern") == "nm" and (target.get("n"), target.get("m")) == (2, 4):
        cfg = Sparse24BitMaskConfig(global_sparsity=sparsity, targets=names, ignore=[])
    else:
        cfg = BitmaskConfig(global_sparsity=sparsity, targets=names, ignore=[], sparsity_structure="unstructured")
    return ModelCompressor(sparsity_config=cfg)


def save_weights(model: nn.Module, tokenizer, out: Path, target: dict, sparsity: float,
                 fmt: str = "safetensors", adapter=None) -> dict:
    """The model and tokenizer in `fmt`; returns {'model_dir', 'format', ...} (the record's `output`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_format(fmt, target.get("pattern", "none"))
    if fmt == "compressed":
        from harness.adapters import adapter_for

        compressor = _compressor(model, adapter or adapter_for(model), target, sparsity)
        state = compressor.compress(model)  # {name.compressed, name.bitmask, name.shape, ...} + dense rest
        model.save_pretrained(out, state_dict=state, safe_serialization=True)
        compressor.update_config(str(out))
        fmt_info = {"format": "compressed", "compression": compressor.sparsity_config.format,
                    "compressed_tensors": _version("compressed-tensors")}
    else:
        model.save_pretrained(out, safe_serialization=True)
        fmt_info = {"format": "safetensors"}
    tokenizer.save_pretrained(out)
    log.info("saved %s model to %s", fmt_info["format"], out)
    return {"model_dir": str(out), **fmt_info}


def save_model(model: nn.Module, tokenizer, out: Path, record: dict, fmt: str = "safetensors",
               adapter=None) -> dict:
    """Weights, tokenizer, pruning_metadata.json and README.md in `out`; returns the record's `output`."""
    sparsity = float((record.get("measured") or {}).get("sparsity_blocks") or 0.0)
    output = save_weights(model, tokenizer, out, record.get("target") or {}, sparsity, fmt, adapter)
    write_card(Path(out), record, {k: v for k, v in output.items() if k != "model_dir"})
    return output


def write_card(out: Path, record: dict, fmt_info: dict) -> dict:
    """pruning_metadata.json and README.md beside saved weights; returns `fmt_info`."""
    meta = metadata(record) | fmt_info
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (out / "README.md").write_text(model_card(meta))
    return fmt_info


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def metadata(record: dict) -> dict:
    """The facts a saved model carries about how it was made."""
    method = record.get("method") or {}
    return {"run_id": record.get("run_id"), "pruning_id": record.get("pruning_id"),
            "base_model": record.get("model"), "method": method, "target": record.get("target"),
            "allocator": record.get("allocator"), "recovery": record.get("recovery"),
            "calibration": record.get("calibration"), "measured": {k: v for k, v in (record.get("measured") or {}).items()
                                                                 if k != "per_layer"},
            "metrics": record.get("metrics"), "provenance": record.get("provenance"),
            "code": (record.get("env") or {}).get("git"), "config": record.get("config"),
            "reproduce": reproduce_command(record)}


def reproduce_command(record: dict) -> str:
    """The record is the recipe: harness.reproduce re-runs it from its resolved config."""
    return f"python -m harness.reproduce <results_dir>/records/{record.get('run_id')}.json"


def model_card(meta: dict) -> str:
    method, target = meta.get("method") or {}, meta.get("target") or {}
    measured, calib = meta.get("measured") or {}, meta.get("calibration") or {}
    base = meta.get("base_model") or {}
    lines = [f"# {base.get('name')} pruned with {method.get('name')} ({target.get('name')})", "",
             "Pruned with prunebench; every figure below is copied from the run's record.",
             "", "| | |", "|---|---|",
             f"| Method | {method.get('name')} v{method.get('version')} |",
             f"| Paper | {method.get('paper')} |",
             f"| Reference implementation | {method.get('reference')} |",
             f"| Differences from the reference | {method.get('differences') or 'none'} |",
             f"| Method parameters | `{json.dumps(method.get('params') or {}, sort_keys=True)}` |",
             f"| Target | {target.get('name')} ({target.get('pattern')}, ratio {target.get('ratio')}) |",
             f"| Measured sparsity (block linears) | {measured.get('sparsity_blocks')} |",
             f"| Parameters before / after | {measured.get('params_before')} / {measured.get('params_after')} |",
             f"| Calibration | {_calib(calib)} |",
             f"| Format | {meta.get('format')}{' (' + str(meta.get('compression')) + ')' if meta.get('compression') else ''} |",
             f"| Run id / pruning id | {meta.get('run_id')} / {meta.get('pruning_id')} |",
             f"| Code | {(meta.get('code') or {}).get('sha')} |", "", "## Metrics", ""]
    metrics = meta.get("metrics") or {}
    ppl = metrics.get("ppl") or {}
    for name, r in ppl.items():
        lines.append(f"- perplexity {name}/{r.get('split')}: {r.get('value'):.4f} "
                     f"(protocol {r.get('protocol')}, seq_len {r.get('seq_len')}, {r.get('n_windows')} windows)")
    for task, r in ((metrics.get("zeroshot") or {}).get("tasks") or {}).items():
        acc = r.get("acc") if isinstance(r, dict) else r
        lines.append(f"- {task}: acc {acc}")
    if not ppl and not metrics.get("zeroshot"):
        lines.append("- none recorded")
    lines += ["", "## Reproduce", "", "```", meta.get("reproduce") or "", "```", "",
              "Loading: `harness.export.load_saved(<this dir>)`"
              + ("; the compressed-tensors format is read by vLLM and `compressed_tensors.ModelCompressor`."
                 if meta.get("format") == "compressed" else "; or `transformers.AutoModelForCausalLM.from_pretrained`."),
              ""]
    return "\n".join(lines)


def _calib(c: dict) -> str:
    if not c:
        return "none (data-free method)"
    return f"{c.get('corpus')}/{c.get('split')}, {c.get('n_samples')} x {c.get('seq_len')} tokens, seed {c.get('seed')}"


def is_saved_model(path: Path) -> bool:
    return (Path(path) / METADATA_FILE).is_file() and (Path(path) / "config.json").is_file()


def read_metadata(path: Path) -> dict:
    return json.loads((Path(path) / METADATA_FILE).read_text())


def is_compressed(path: Path) -> bool:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(((cfg.get("quantization_config") or {}).get("sparsity_config") or {}).get("format"))


def load_saved(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) from a saved directory of either format."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if is_compressed(path):
        model = load_compressed(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    model = model.to(device=device, dtype=dtype).eval()
    model.config.use_cache = False
    from harness.quant import apply_saved_quant

    return apply_saved_quant(model), tokenizer   # a ternary model's 8-bit activations come back as hooks


def load_compressed(path: Path) -> nn.Module:
    """Dense tensors as saved, every compressed linear through compressed-tensors' decompressor."""
    from compressed_tensors import ModelCompressor
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    compressor = ModelCompressor.from_pretrained(str(path))
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):  # read by the compressor above, not by transformers
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update({k: v for k, v in load_file(f).items() if k in own})
    missing, _ = model.load_state_dict(state, strict=False)   # the dense part (embeddings, norms, ...)
    compressed = {f"{t}.weight" for t in compressor.sparsity_config.targets or []}
    tied = {k for k in missing if k.endswith("lm_head.weight") and getattr(config, "tie_word_embeddings", False)}
    if set(missing) - compressed - tied:
        raise ExportError(f"{path}: tensors missing from the saved model: {sorted(set(missing) - compressed - tied)[:5]}")
    compressor.decompress(str(path), model)                    # the sparse linears
    model.tie_weights()
    return model
