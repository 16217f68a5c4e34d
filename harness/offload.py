"""Where a model's weights live while it is pruned and evaluated (`runtime.offload`).

  none  the whole model on the device in the storage dtype (the path of small models)
  cpu   the whole model in host RAM in the storage dtype; one unit at a time on the device
  disk  the weights stay in their safetensors files; a unit is read when it is needed and
        released after; a unit a method changed is written to a staging file, and `finalize`
        assembles the pruned model as a new sharded safetensors directory
  auto  the first of none / disk whose predicted peak (plan_memory) fits the device memory, or
        `runtime.max_memory_gb` when set (on a CPU device, cpu is the same as none)

A *unit* is a decoder block or one module outside the blocks that owns parameters (embedding,
final norm, LM head). While a unit is in use (`Residency.session`) its parameters are on the
device in the compute dtype: float32 on CPU (bf16 matmuls are >100x slower there), the storage
dtype on CUDA. Embeddings stay in the storage dtype (a lookup is exact in any dtype; its output is
cast to the compute dtype), so a 128k-vocab embedding never exists in float32. When a session
that changed the unit ends, its weights are cast back to the storage dtype: every mode stores
exactly the same rounded numbers, so results are bit-identical across modes.

Code that calls the model directly (evaluators, lm-eval, latency, prefill timing) needs nothing:
forward hooks onload each unit for its forward and release it after.

Files are read with positioned reads in chunks, not through a memory map: pages of a mapped file
count in the process's RSS until unmapped, which would hide the memory bound this module exists
for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from harness.files import write_atomic

log = logging.getLogger(__name__)

MODES = ("none", "cpu", "disk", "auto")

_ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
_CHUNK = 64 << 20   # bytes per positioned read


# -------------------------------------------------------------------------------------------------
# reading safetensors tensor by tensor

@dataclass(frozen=True)
class _Entry:
    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int          # absolute byte offsets in the file
    end: int


def _read_header(path: Path) -> dict[str, _Entry]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = _Entry(path, _ST_DTYPES[info["dtype"]], tuple(info["shape"]), 8 + n + a, 8 + n + b)
    return out


class SafetensorsStore:
    """Tensor name -> location over a set of safetensors files; reads one tensor at a time."""

    def __init__(self, files):
        self.entries: dict[str, _Entry] = {}
        for path in files:
            self.entries.update(_read_header(Path(path)))

    @classmethod
    def from_dir(cls, path: str | Path) -> "SafetensorsStore":
        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no safetensors in {path}")
        return cls(files)

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def dtype(self, name: str) -> torch.dtype:
        return self.entries[name].dtype

    def update_file(self, path: Path) -> None:
        """Tensors of `path` take precedence from now on (a pruned unit's staging file)."""
        self.entries.update(_read_header(path))

    def read(self, name: str, dtype: torch.dtype | None = None, device="cpu") -> torch.Tensor:
        """The tensor, converted to `dtype` chunk by chunk (no full-size copy in the file's dtype)."""
        e = self.entries[name]
        dtype = dtype or e.dtype
        out = torch.empty(e.shape, dtype=dtype)
        flat = out.view(-1)
        itemsize = torch.empty((), dtype=e.dtype).element_size()
        per = max(_CHUNK // itemsize, 1)
        n = flat.numel()
        with open(e.path, "rb", buffering=0) as f:
            for lo in range(0, n, per):
                hi = min(lo + per, n)
                buf = torch.empty((hi - lo) * itemsize, dtype=torch.uint8)
                f.seek(e.start + lo * itemsize)
                got = f.readinto(memoryview(buf.numpy()))
                if got != buf.numel():
                    raise OSError(f"{e.path}: short read of {name}")
                flat[lo:hi].copy_(buf.view(e.dtype))
        return out if str(device) == "cpu" else out.to(device)


def checkpoint_dtype(path: Path) -> torch.dtype | None:
    """The floating dtype of a safetensors checkpoint directory (from its first file's header)."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        return None
    for e in _read_header(files[0]).values():
        if e.dtype.is_floating_point:
            return e.dtype
    return None


# -------------------------------------------------------------------------------------------------
# memory accounting (shared by `auto`, the records and benchmarks/scale.py --plan-only)

BASE_PROCESS_BYTES = int(0.9e9)   # python + torch + transformers + datasets, measured on this CPU


def _shape(config) -> dict:
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    d, f, L = get("hidden_size"), get("intermediate_size"), get("num_hidden_layers")
    heads = get("num_attention_heads")
    hd = get("head_dim") or d // heads
    kv = (get("num_key_value_heads") or heads) * hd
    block = d * heads * hd * 2 + d * kv * 2 + 3 * d * f + 2 * d
    vocab = get("vocab_size")
    tied = bool(get("tie_word_embeddings", False))
    return {"d": d, "f": f, "L": L, "block": block, "embed": vocab * d, "head": 0 if tied else vocab * d,
            "vocab": vocab}


def plan_memory(config, *, mode: str, device: str, storage_bytes: int, compute_bytes: int, calib_tokens: int,
                hessian: bool, eval_tokens: int) -> dict:
    """Predicted peak bytes on the host and on the device for pruning + perplexity.

    Counted: the model (whole, or one unit) in storage and compute dtype; the calibration
    activations (inputs, outputs and dense outputs of the current block, compute dtype); the
    method's per-linear work (Wanda: score + sort of the largest linear; SparseGPT: the block's
    Hessians and inverse factors, where the [f, f] down_proj Hessian is handed over to its factor
    so two [f, f] tensors are alive, plus the reconstructed copy of the largest linear); the LM head in compute dtype with its logits for the evaluation;
    a constant for the interpreter and libraries (BASE_PROCESS_BYTES)."""
    s = _shape(config)
    d, f = s["d"], s["f"]
    model_bytes = (s["L"] * s["block"] + s["embed"] + s["head"]) * storage_bytes
    acts = 3 * calib_tokens * d * compute_bytes
    big = f * d                                              # largest linear [f, d] or [d, f]
    if hessian:   # Hessians + inverse factors of the d-wide groups, down_proj's H and one temporary
        work = (6 * d * d + 2 * f * f + 2 * big) * 4
    else:
        work = big * (4 + 8 + 4)                             # score, sort indices, sorted values
    block_c = s["block"] * compute_bytes
    head_eval = (s["head"] or s["embed"]) * compute_bytes + eval_tokens * s["vocab"] * 4 * 2
    embed_s = s["embed"] * storage_bytes
    unit_peak = max(block_c + s["block"] * storage_bytes + acts + work, head_eval, embed_s + acts)
    if device == "cpu":
        resident = 0 if mode == "disk" else model_bytes
        host = BASE_PROCESS_BYTES + resident + unit_peak
        dev = host
    else:
        host_model = model_bytes if mode == "cpu" else 0
        host = BASE_PROCESS_BYTES + host_model + s["block"] * storage_bytes + calib_tokens * d * compute_bytes
        dev = (model_bytes if mode == "none" else 0) + unit_peak
    return {"host_peak_bytes": int(host), "device_peak_bytes": int(dev), "model_bytes": int(model_bytes),
            "mode": mode, "device": device}


def available_bytes(device: str) -> int:
    """Device memory (CUDA) or the host's available memory (CPU)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


AUTO_HEADROOM = 0.75   # without max_memory_gb, auto plans within this share of the free memory


def choose_mode(requested: str, config, device: str, storage: torch.dtype, compute: torch.dtype,
                max_memory_gb: float | None, calib_tokens: int, hessian: bool,
                eval_tokens: int = 2048) -> tuple[str, dict]:
    """Resolve `auto`: none if the whole model fits the budget, else disk (cpu on a GPU node whose
    host holds the model). Returns (mode, the plan used)."""
    sb, cb = storage.itemsize, compute.itemsize
    budget = int(max_memory_gb * 1e9) if max_memory_gb else int(AUTO_HEADROOM * available_bytes(device))
    plans = {m: plan_memory(config, mode=m, device=device.split(":")[0], storage_bytes=sb, compute_bytes=cb,
                            calib_tokens=calib_tokens, hessian=hessian, eval_tokens=eval_tokens)
             for m in ("none", "cpu", "disk")}
    if requested != "auto":
        return requested, plans[requested] | {"budget_bytes": budget}
    order = ("none", "disk") if device == "cpu" else ("none", "cpu", "disk")
    for m in order:
        key = "host_peak_bytes" if device == "cpu" else "device_peak_bytes"
        if plans[m][key] <= budget and (device == "cpu" or
                                        plans[m]["host_peak_bytes"] <= AUTO_HEADROOM * available_bytes("cpu")):
            return m, plans[m] | {"budget_bytes": budget}
    return "disk", plans["disk"] | {"budget_bytes": budget}


# -------------------------------------------------------------------------------------------------
# residency of units

@dataclass
class _Unit:
    module: nn.Module
    prefix: str                     # its parameters' names in the files are prefix + relative name
    is_block: bool
    embedding: bool
    depth: int = 0                  # nesting of open sessions and hooked forwards
    modified: bool = False
    home: dict = field(default_factory=dict)   # (submodule, param name) -> Parameter while onloaded


class Residency:
    """Onloads and releases units; see the module docstring."""

    def __init__(self, model: nn.Module, adapter, mode: str, device: str, storage: torch.dtype,
                 compute: torch.dtype, store: SafetensorsStore | None = None):
        if mode not in ("none", "cpu", "disk"):
            raise ValueError(f"offload mode must be one of none, cpu, disk (auto is resolved before), got {mode!r}")
        if mode == "disk" and store is None:
            raise ValueError("disk offload needs the safetensors files of the model")
        self.model, self.adapter, self.mode = model, adapter, mode
        self.device, self.storage, self.compute = device, storage, compute
        self.store = store
        self.staging: Path | None = None
        self.materialized_reason: str | None = None
        self._hooks = mode != "none" or compute != storage
        # tied parameters: one tensor in the files, under the first name present there (HF keeps
        # the embedding of a tied head); alias name -> that name
        groups: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(name)
        self._canonical: dict[str, str] = {}
        for names in groups.values():
            canonical = next((n for n in names if store is None or n in store), names[0])
            self._canonical.update({n: canonical for n in names if n != canonical})
        self.units: list[_Unit] = []
        self._by_module: dict[int, _Unit] = {}
        self._refresh_units()

    # -- units ------------------------------------------------------------------------------------
    def _refresh_units(self) -> None:
        """Units of the model as it is now (surgery drops blocks and replaces modules)."""
        units = []
        blocks = self.adapter.blocks(self.model)
        in_blocks = {id(m) for b in blocks for m in b.modules()}
        candidates = [(b, self.adapter.block_prefix(i), True) for i, b in enumerate(blocks)]
        candidates += [(m, name, False) for name, m in self.model.named_modules()
                       if id(m) not in in_blocks and list(m.parameters(recurse=False))]
        for mod, prefix, is_block in candidates:
            u = self._by_module.get(id(mod))
            if u is None or u.module is not mod:
                u = _Unit(mod, prefix, is_block, isinstance(mod, nn.Embedding))
                if self._hooks:
                    mod.register_forward_pre_hook(self._pre_hook)
                    mod.register_forward_hook(self._post_hook)
            units.append(u)
        self.units = units
        self._by_module = {id(u.module): u for u in units}

    def _unit(self, module: nn.Module) -> _Unit:
        u = self._by_module.get(id(module))
        if u is None or u.module is not module:
            self._refresh_units()
            u = self._by_module[id(module)]
        return u

    def _slots(self, u: _Unit):
        """(submodule, param name, parameter, name in the files, is a tied alias) of a unit."""
        for mname, sub in u.module.named_modules(remove_duplicate=False):
            for pname, p in sub._parameters.items():
                if p is not None:
                    own = ".".join(filter(None, (u.prefix, mname, pname)))
                    yield sub, pname, p, self.canonical_name(own), own in self._canonical

    def canonical_name(self, name: str) -> str:
        """The file name a parameter is stored under (a tied alias -> the tensor it shares)."""
        return self._canonical.get(name, name)

    @property
    def streaming(self) -> bool:
        """Weights come from the files unit by unit (disk mode, not materialised)."""
        return self.mode == "disk" and self.materialized_reason is None

    def describe(self) -> dict:
        return {"mode": self.mode, "storage_dtype": str(self.storage).replace("torch.", ""),
                "compute_dtype": str(self.compute).replace("torch.", ""),
                "materialized": self.materialized_reason}

    # -- hooks: any forward onloads the unit for its own duration -------------------------------
    def _pre_hook(self, module, _args):
        u = self._unit(module)
        if u.depth == 0:
            self._onload(u)
        u.depth += 1

    def _post_hook(self, module, _args, output):
        u = self._unit(module)
        u.depth -= 1
        if u.depth == 0:
            self._release(u)
        if u.embedding and isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.to(self.compute)
        return output

    # -- sessions ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, *modules: nn.Module, modifies: bool = False):
        """Keep `modules` (units) onloaded for the block; `modifies`: they are written back after."""
        units = [self._unit(m) for m in modules]
        for u in units:
            if u.depth == 0:
                self._onload(u)
            u.depth += 1
            u.modified |= modifies
        try:
            yield
        finally:
            for u in units:
                u.depth -= 1
                if u.depth == 0:
                    self._release(u)

    def _read(self, name: str, embedding: bool) -> torch.Tensor:
        """A tensor from the files: storage dtype for embeddings and non-float tensors, compute
        dtype otherwise (rounded through the storage dtype, as the other modes hold it)."""
        file_dtype = self.store.dtype(name)
        if not file_dtype.is_floating_point:
            return self.store.read(name, None, self.device)
        if embedding:
            return self.store.read(name, self.storage, self.device)
        if file_dtype == self.storage:
            return self.store.read(name, self.compute, self.device)
        return self.store.read(name, self.storage).to(self.device, self.compute)

    def _onload(self, u: _Unit) -> None:
        for sub, pname, p, name, _ in list(self._slots(u)):
            if self.streaming:
                t = self._read(name, u.embedding)
            else:
                dtype = p.dtype if (u.embedding or not p.is_floating_point()) else self.compute
                if p.dtype == dtype and p.device == torch.device(self.device):
                    continue
                t = p.detach().to(self.device, dtype)
            u.home[(sub, pname)] = p
            sub._parameters[pname] = nn.Parameter(t, requires_grad=p.requires_grad)

    def _release(self, u: _Unit) -> None:
        modified, u.modified = u.modified, False
        if self.streaming and modified:
            self._write_staging(u)
        for (sub, pname), home in u.home.items():
            if modified and not self.streaming and home.is_floating_point():
                home.data = sub._parameters[pname].detach().to(home.device, home.dtype)
            sub._parameters[pname] = home
        u.home.clear()

    def _storage_copy(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu", self.storage if t.is_floating_point() else t.dtype).contiguous()

    def _write_staging(self, u: _Unit) -> None:
        from safetensors.torch import save_file

        tensors = {name: self._storage_copy(p) for _, _, p, name, alias in self._slots(u) if not alias}
        if self.staging is None:
            import tempfile
            self.staging = Path(tempfile.mkdtemp(prefix="prunebench-staging-"))
        self.staging.mkdir(parents=True, exist_ok=True)
        path = self._staged(u)
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        self.store.update_file(path)

    def _staged(self, u: _Unit) -> Path:
        return self.staging / f"unit-{u.prefix.replace('.', '-')}.safetensors"

    # -- whole-model views ---------------------------------------------------------------------------
    def materialize(self, reason: str, budget_bytes: int | None = None) -> None:
        """Load every unit on the host in the storage dtype, for code that needs the whole model
        at once (gradients over all weights, width surgery, recovery). Disk mode still writes its
        output with `finalize`. Raises MemoryError, before reading, when it cannot fit."""
        if not self.streaming:
            return
        need = sum(e.end - e.start for e in self.store.entries.values())
        if budget_bytes is not None and need > budget_bytes:
            raise MemoryError(f"{reason}: needs the whole model resident ({need / 1e9:.1f} GB in "
                              f"{str(self.storage).replace('torch.', '')}), more than the memory budget "
                              f"({budget_bytes / 1e9:.1f} GB); use a streaming method or a larger node")
        self._refresh_units()
        loaded: dict[str, nn.Parameter] = {}
        for u in self.units:
            for sub, pname, p, name, _ in list(self._slots(u)):
                if name not in loaded:   # tied slots get one shared parameter again
                    dtype = self.storage if self.store.dtype(name).is_floating_point else None
                    loaded[name] = nn.Parameter(self.store.read(name, dtype), requires_grad=p.requires_grad)
                sub._parameters[pname] = loaded[name]
        self.materialized_reason = reason

    def named_tensors(self, blocks: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """(file name, tensor) of every distinct parameter (`blocks=False`: outside the blocks),
        one unit onloaded at a time."""
        self._refresh_units()
        for u in list(self.units):
            if u.is_block and not blocks:
                continue
            with self.session(u.module):
                for _, _, p, name, alias in self._slots(u):
                    if not alias:
                        yield name, p.detach()

    def _storage_tensors(self, u: _Unit):
        """(name in the files, tensor in storage dtype on the host) of a unit's non-alias slots;
        streamed units are read from the files directly (no compute-dtype copy)."""
        for _, _, p, name, alias in list(self._slots(u)):
            if alias:
                continue
            if self.streaming:
                dtype = self.storage if self.store.dtype(name).is_floating_point else None
                yield name, self.store.read(name, dtype)
            else:
                yield name, self._storage_copy(p)

    def finalize(self, out_dir: Path) -> Path:
        """Disk mode: write the (pruned) model as sharded safetensors in `out_dir`, one shard per
        block and per other unit, then stream from it. A block pruned in place is moved from its
        staging file; a renumbered or untouched one is copied tensor by tensor. Returns out_dir."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._refresh_units()
        blocks = [u for u in self.units if u.is_block]
        rest = [u for u in self.units if not u.is_block and any(not s[4] for s in self._slots(u))]
        n_shards = len(blocks) + len(rest)
        weight_map: dict[str, str] = {}
        for k, u in enumerate(blocks + rest):
            fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
            new = self.adapter.block_prefix(k) if u.is_block else u.prefix
            rename = lambda name, u=u, new=new: new + name[len(u.prefix):]  # noqa: E731
            names = {rename(s[3]) for s in self._slots(u) if not s[4]}
            staged = self._staged(u) if self.staging is not None else None
            if (self.streaming and staged is not None and staged.is_file() and new == u.prefix
                    and set(_read_header(staged)) == names):
                os.replace(staged, out_dir / fname)     # pruned in place: already final
            else:
                tensors = {rename(name): t for name, t in self._storage_tensors(u)}
                save_file(tensors, str(out_dir / fname), metadata={"format": "pt"})
                del tensors
            weight_map.update({n: fname for n in names})
            u.prefix = new
        total = sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
        self.model.config.dtype = self.storage
        self.model.config.save_pretrained(out_dir)
        # from now on every unit streams from the written model
        self.store = SafetensorsStore.from_dir(out_dir)
        if self.materialized_reason is not None:
            # one placeholder per tensor in the files: tied slots keep sharing one parameter, so
            # the model's parameter count (and any tie-aware code) sees the same model as before
            placeholders: dict[str, nn.Parameter] = {}
            for u in self.units:
                for sub, pname, p, name, _ in list(self._slots(u)):
                    if name not in placeholders:
                        placeholders[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"),
                                                          requires_grad=p.requires_grad)
                    sub._parameters[pname] = placeholders[name]
            self.materialized_reason = None
        if not self._hooks:
            self._hooks = True
            self._by_module = {}
        self._refresh_units()
        if self.staging is not None and self.staging.is_dir():
            import shutil
            shutil.rmtree(self.staging, ignore_errors=True)
        return out_dir


def residency_of(model: nn.Module) -> Residency | None:
    return getattr(model, "_prunebench_residency", None)


@contextlib.contextmanager
def session(model: nn.Module, *modules: nn.Module, modifies: bool = False):
    """`Residency.session` when the model has one, else nothing to do."""
    r = residency_of(model)
    if r is None:
        yield
        return
    with r.session(*modules, modifies=modifies):
        yield
