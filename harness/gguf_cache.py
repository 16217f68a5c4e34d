"""Dequantize a GGUF file tensor by tensor into a sharded float32 safetensors directory.

transformers' own GGUF loader (`from_pretrained(..., gguf_file=...)`) dequantizes every tensor into
one in-memory float32 state dict and builds the whole model before anything can be saved: ~4x the
file's parameters in float32 at once. Here the file is memory-mapped (gguf.GGUFReader), each tensor
is dequantized, renamed and transformed exactly as transformers' legacy GGUF loader does
(`modeling_gguf_pytorch_utils`: the same name map, the same per-architecture TensorProcessor, the
same float32 cast), and written out with the rest of its decoder block; a shard is released before
the next one is dequantized, so the weights' share of the peak is one shard (a block, or the
embedding alone) and the dequantizer's temporaries for its largest tensor, not the model.

The result is a regular transformers checkpoint directory (config.json, generation_config.json,
model-0000i-of-0000n.safetensors + model.safetensors.index.json, tokenizer files) that
`from_pretrained(dir)` and harness.offload.SafetensorsStore read as they read any sharded checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

INDEX_NAME = "model.safetensors.index.json"
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def streams(path: Path) -> bool:
    """Whether `write_dequantized` handles this file's architecture. transformers 5 loads a few
    architectures (qwen35, lfm2, ...) through weight-conversion ops instead of the legacy per-tensor
    processors reproduced here; those are left to transformers' whole-model loader."""
    from transformers.integrations.gguf.reader import read_gguf_metadata
    from transformers.integrations.gguf.utils import is_gguf_arch_supported

    metadata, _ = read_gguf_metadata(str(path))   # the header only, no tensor data
    return not is_gguf_arch_supported(metadata["general.architecture"])


def _shard_groups(names: list[str]) -> list[list[str]]:
    """GGUF tensor names in file order, cut into shards: the tensors of one decoder block (`blk.N.*`)
    together, every other tensor (token_embd, output_norm, output) alone, so no shard holds more
    than one block or one embedding-sized matrix. A block whose tensors are not contiguous in the
    file gets more than one shard rather than being held back."""
    groups: list[list[str]] = []
    last = None
    for name in names:
        m = _BLOCK.match(name)
        key = int(m.group(1)) if m else name
        if not groups or key != last or m is None:
            groups.append([])
        groups[-1].append(name)
        last = key
    return groups


def _tied_targets(model) -> set[str]:
    """Parameter names that alias another one when the config ties them (lm_head.weight ->
    model.embed_tokens.weight for SmolLM2); save_pretrained leaves them out and from_pretrained
    re-ties them, so the cache leaves them out too."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return set(tied)


def _gguf_mapping(path: Path):
    """(reader, float32 config, transformers' tensor processor, GGUF -> parameter name map, tied
    parameter names) from the file's metadata; no tensor is dequantized."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
    )

    # metadata only (return_tensors=False): the dict transformers hands its TensorProcessor, and the
    # config it builds the model from; neither dequantizes a tensor.
    parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    config.dtype = torch.float32   # what from_pretrained(dtype=float32) records in config.json
    with torch.device("meta"):     # the parameter names only; no storage is allocated
        skeleton = AutoModelForCausalLM.from_config(config)
    config.architectures = [type(skeleton).__name__]   # as save_pretrained of the loaded model writes
    reader = GGUFReader(path)      # numpy memmap over the file: tensors are paged in as they are read
    architecture = reader.fields["general.architecture"].contents()
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    key_map = get_gguf_hf_weights_map(skeleton, processor)
    tied = _tied_targets(skeleton) if config.get_text_config().tie_word_embeddings else set()
    return reader, config, processor, key_map, tied


def _dequantized_shard(group: list[str], tensors: dict, processor, key_map: dict, tied: set[str]) -> dict:
    """{parameter name: float32 contiguous tensor} of one shard's GGUF tensors, tied aliases left out."""
    from gguf.quants import dequantize

    # Some processors (the MoE ones) merge several GGUF tensors into one parameter by writing
    # into parsed_parameters["tensors"]; the shard's dict is that buffer, so a merged expert
    # tensor is complete once its block is.
    shard: dict[str, torch.Tensor] = {}
    for gguf_name in group:
        t = tensors[gguf_name]
        weights = dequantize(t.data, t.tensor_type)   # numpy, shape reversed from GGUF's (out, in)
        result = processor.process(weights=weights, name=gguf_name, tensor_key_mapping=key_map,
                                   parsed_parameters={"tensors": shard})
        if result.name is None or result.name not in key_map:
            continue   # merged into the buffer above, or a tensor transformers does not load
        # np.copy: the processed array can be a view of the memmap (F32 tensors) or non-contiguous
        shard[key_map[result.name]] = torch.from_numpy(np.copy(result.weights)).to(torch.float32)
    for name in [n for n in shard if n in tied]:
        del shard[name]
    return {n: v.to(torch.float32).contiguous() for n, v in shard.items()}


def write_dequantized(path: Path, out: Path) -> dict[str, int]:
    """Write the float32 checkpoint of the GGUF file `path` into the (new, empty) directory `out`.
    Returns {transformers parameter name: number of elements} of what was written."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, GenerationConfig

    out.mkdir(parents=True, exist_ok=False)
    reader, config, processor, key_map, tied = _gguf_mapping(path)
    tensors = {t.name: t for t in reader.tensors}
    groups = _shard_groups(list(tensors))
    weight_map: dict[str, str] = {}
    written: dict[str, int] = {}
    total_bytes = 0
    for i, group in enumerate(groups, start=1):
        shard_name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        shard = _dequantized_shard(group, tensors, processor, key_map, tied)
        if shard:
            save_file(shard, str(out / shard_name), metadata={"format": "pt"})
        for name, value in shard.items():
            weight_map[name] = shard_name
            written[name] = value.numel()
            total_bytes += value.numel() * value.element_size()
        del shard   # one shard of float32 tensors in memory at a time
    _renumber(out, groups, weight_map)
    (out / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total_bytes},
                                              "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(out)
    return written


def _renumber(out: Path, groups: list[list[str]], weight_map: dict[str, str]) -> None:
    """Shards that held nothing (a GGUF tensor transformers does not load, e.g. rope_freqs) were not
    written; rename the rest to a gapless model-0000i-of-0000n sequence, as transformers names them."""
    kept = sorted(set(weight_map.values()))
    if len(kept) == len(groups):
        return
    renamed = {old: f"model-{i:05d}-of-{len(kept):05d}.safetensors" for i, old in enumerate(kept, start=1)}
    for old, new in renamed.items():
        (out / old).rename(out / new)
    for name, old in weight_map.items():
        weight_map[name] = renamed[old]
