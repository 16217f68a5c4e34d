"""Latency: prefill (batch x prompt length) and decode (ms per generated token at a batch size).

Each configuration runs `warmup` untimed repeats, then `repeats` timed ones; we report the median,
the inter-quartile range and min/max (seconds, ms/token, tokens/s), plus device, dtype, threads and
the kernel path the block linears ran through. Inputs are seeded random token ids (latency does
not depend on their values). On CUDA, `semi_structured: true` swaps every block linear whose
weight is exactly 2:4 sparse for torch.sparse.to_sparse_semi_structured (cuSPARSELt or CUTLASS
kernels; fp16/bf16 only) for the measurement and restores the dense weight afterwards, so the
table shows whether 2:4 sparsity bought speed. On CPU there is no sparse kernel path: a pruned
model runs the same dense GEMMs and is not faster (recorded as kernel path "dense"); structured
methods are faster only because their matrices are smaller. `sparse_kernel: csr | flash_llm` runs every
block linear through a sparse kernel instead (harness.evaluation.sparse_kernels); the record's
`kernel_path` / `sparse_kernel` say which kernel ran.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager

import torch
from torch import nn

from harness.adapters import adapter_for
from harness.blocks.masks import nm_violations
from harness.evaluation.sparse_kernels import check_kernel, sparse_kernel_weights
from harness.record_schema import Evaluated, result, section
from harness.record_schema import spread as spread_of   # `spread` here is the timing statistics

PROTOCOL = "latency-prefill-decode"
PROTOCOL_VERSION = "1"


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "iqr": q[2] - q[0],
            "min": min(values), "max": max(values), "n": len(values)}


class SemiStructuredLinear(nn.Module):
    """A 2:4 linear whose weight is a SparseSemiStructuredTensor. Inputs are flattened to 2-D: the
    tensor subclass implements mm/addmm, not the batched matmul (expand + bmm) that a 3-D F.linear
    decomposes into (NotImplementedError: ... can't perform requested op (expand.default))."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        self.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.data), requires_grad=False)
        self.bias = linear.bias
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)   # [tokens, out]
        return y.reshape(*x.shape[:-1], self.out_features)


@contextmanager
def semi_structured_weights(model, adapter, enable: bool):
    """Swap exact-2:4 block linears for SemiStructuredLinear modules; yields the kernel path and
    restores the dense modules afterwards."""
    if not enable:
        yield {"kernel_path": "dense", "swapped_linears": 0}
        return
    p = next(model.parameters())
    if not p.is_cuda:
        raise ValueError("latency.semi_structured needs a CUDA device (no 2:4 kernels on CPU)")
    if p.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"latency.semi_structured needs float16/bfloat16 weights, got {p.dtype} (runtime.dtype)")
    from torch.sparse import SparseSemiStructuredTensor

    swapped, skipped, kinds = [], 0, set()
    try:
        for block in adapter.blocks(model):
            for name, lin in adapter.linears(block).items():
                bad, _ = nm_violations(lin.weight.data, 2, 4)
                if bad:
                    skipped += 1
                    continue
                parent_name, _, child = name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                sparse = SemiStructuredLinear(lin)
                kinds.add(type(sparse.weight.data).__name__)
                setattr(parent, child, sparse)
                swapped.append((parent, child, lin))
        if not swapped:
            raise ValueError("latency.semi_structured: no block linear is exactly 2:4 sparse (use target=nm_2_4)")
        yield {"kernel_path": "semi_structured:" + ",".join(sorted(kinds)), "swapped_linears": len(swapped),
               "dense_linears": skipped,
               "force_cutlass": bool(getattr(SparseSemiStructuredTensor, "_FORCE_CUTLASS", False))}
    finally:
        for parent, child, lin in swapped:
            setattr(parent, child, lin)


def _timed(fn, device: str, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def _vocab(model) -> int:
    config = model.config
    return config.get_text_config().vocab_size if hasattr(config, "get_text_config") else config.vocab_size


def _random_ids(vocab: int, batch: int, length: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).to(device)   # [b, L]


@torch.no_grad()
def prefill_latency(model, batch: int, prompt_len: int, vocab: int, device: str, warmup: int, repeats: int,
                    seed: int = 0) -> dict:
    ids = _random_ids(vocab, batch, prompt_len, device, seed)
    times = _timed(lambda: model(ids, use_cache=True), device, warmup, repeats)
    s = spread(times)
    return {"batch": batch, "prompt_len": prompt_len, "seconds": s,
            "tokens_per_s_median": batch * prompt_len / s["median"]}


PREFILL_PROBE = {"name": "prefill_cpu", "version": "1"}


@torch.no_grad()
def prefill_probe(model: nn.Module, seq_len: int = 512, warmup: int = 1, repeats: int = 5, seed: int = 0) -> dict:
    """Prefill time of one 1 x seq_len forward without KV cache (protocol `prefill_cpu` v1), timed
    like the latency evaluator: structured methods record it before and after surgery in
    `prune_report.latency`, so the speed-up shows in the pruning run itself."""
    device = next(model.parameters()).device
    ids = _random_ids(_vocab(model), 1, seq_len, device, seed)
    times = _timed(lambda: model(ids, use_cache=False), str(device), warmup, repeats)
    return {"protocol": PREFILL_PROBE, "batch": 1, "seq_len": seq_len, "warmup": warmup, "repeats": repeats,
            "threads": torch.get_num_threads(), "median_s": statistics.median(times), "min_s": min(times),
            "times_s": times}


@torch.no_grad()
def decode_latency(model, batch: int, prompt_len: int, new_tokens: int, vocab: int, device: str, warmup: int,
                   repeats: int, seed: int = 0) -> dict:
    """Per repeat: an untimed prefill of prompt_len, then `new_tokens` single-token steps timed."""
    from transformers import DynamicCache

    ids = _random_ids(vocab, batch, prompt_len, device, seed)
    per_token = []
    for i in range(warmup + repeats):
        cache = DynamicCache(config=model.config)
        out = model(ids, past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)                                          # [b, 1]
        _sync(device)
        t = time.perf_counter()
        for _ in range(new_tokens):
            out = model(nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
        _sync(device)
        if i >= warmup:
            per_token.append((time.perf_counter() - t) / new_tokens)
    s = spread([x * 1000 for x in per_token])
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "ms_per_token": s,
            "tokens_per_s_median": batch * 1000 / s["median"]}


def measure(model, section: dict, device: str, seed: int = 0) -> dict:
    adapter = adapter_for(model)
    vocab = _vocab(model)
    warmup, repeats = int(section.get("warmup", 2)), int(section.get("repeats", 5))
    pre, dec = section.get("prefill") or {}, section.get("decode") or {}
    p = next(model.parameters())
    result = {"protocol": PROTOCOL, "protocol_version": PROTOCOL_VERSION, "device": str(device),
              "dtype": str(p.dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
              "warmup": warmup, "repeats": repeats,
              "attn_implementation": getattr(model.config, "_attn_implementation", None),
              "params": sum(x.numel() for x in model.parameters()), "prefill": [], "decode": [],
              # a shared machine's load changes every figure; recorded so readers can tell
              "cpu_count": os.cpu_count(), "load_avg_1m_start": os.getloadavg()[0]}
    if str(device).startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(torch.device(device).index or 0)
    sparse_kernel = str(section.get("sparse_kernel", "none"))
    check_kernel(sparse_kernel, str(device))
    if sparse_kernel != "none" and section.get("semi_structured", False):
        raise ValueError("latency: semi_structured and sparse_kernel are exclusive (one kernel per linear)")
    with semi_structured_weights(model, adapter, bool(section.get("semi_structured", False))) as kernels, \
            sparse_kernel_weights(model, adapter, sparse_kernel) as sparse:
        result.update(kernels)
        result.update(sparse)
        if sparse_kernel != "none":
            result["kernel_path"] = f"sparse:{sparse_kernel}"
        for b in pre.get("batch", [1]):
            for length in pre.get("prompt_len", [128]):
                result["prefill"].append(prefill_latency(model, int(b), int(length), vocab, device, warmup,
                                                         repeats, seed))
        for b in dec.get("batch", [1]):
            result["decode"].append(decode_latency(model, int(b), int(dec.get("prompt_len", 128)),
                                                   int(dec.get("new_tokens", 16)), vocab, device, warmup,
                                                   repeats, seed))
    result["load_avg_1m_end"] = os.getloadavg()[0]
    return result


def check(section: dict, data_dir, device: str) -> None:
    """Validation: `sparse_kernel` names a registered kernel that runs on the run's device
    (flash_llm: CUDA, or CPU under Triton's interpreter), refused in one line before the model loads."""
    check_kernel(str(section.get("sparse_kernel", "none")), device)


def declare(values: dict):
    """Per prefill setting: median ms (lower is better; stored in seconds) with its inter-quartile
    range; per decode setting: median ms per generated token with its IQR. Quoted settings: device,
    dtype and threads. The kernel path is shown beside the numbers."""
    metrics = []
    for i, p in enumerate(values["prefill"]):
        name = f"prefill ms b{p['batch']}x{p['prompt_len']}"
        m = result(name, ["prefill", i, "seconds", "median"], False, quality=False, scale=1000.0)
        metrics += [m, spread_of("iqr", m, ["prefill", i, "seconds", "iqr"], header=name, scale=1000.0)]
    for i, d in enumerate(values["decode"]):
        name = f"decode ms/token b{d['batch']} (prompt {d['prompt_len']})"
        m = result(name, ["decode", i, "ms_per_token", "median"], False, quality=False)
        metrics += [m, spread_of("iqr", m, ["decode", i, "ms_per_token", "iqr"], header=name)]
    return section(PROTOCOL, PROTOCOL_VERSION, "latency", metrics,
                   settings={"device": values["device"], "dtype": values["dtype"], "threads": values["threads"]},
                   facts={"kernel path": ["kernel_path"]})


def evaluate(model, tokenizer, cfg: dict, ctx) -> Evaluated:
    """cfg: {warmup, repeats, semi_structured, sparse_kernel (none|csr|flash_llm), prefill: {batch: [..], prompt_len: [..]},
    decode: {batch: [..], prompt_len, new_tokens}}"""
    values = measure(model, cfg, ctx.device, ctx.seed)
    return Evaluated("latency", values, declare(values))
