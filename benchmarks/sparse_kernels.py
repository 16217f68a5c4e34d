"""Where does an unstructured-sparse kernel beat the dense GEMM? Decode-shaped linears (a few
tokens x the weight) of SmolLM2-135M and of a LLaMA-2-7B-sized model, at 50-95% sparsity, timed
side by side in one process: dense F.linear vs the latency evaluator's sparse kernels
(harness.evaluation.sparse_kernels: `csr` through torch.sparse, `flash_llm` through the Triton
load-as-sparse, compute-as-dense SpMM). Prints per shape, tokens and sparsity the median times and
each kernel's speedup over dense, then per kernel the crossover (lowest sparsity from which it is
faster at every higher level).

Flash-LLM's claim (Xia et al., VLDB 2024, arXiv:2309.10285) is a crossover at 60-90% on GPU tensor
cores for decode shapes. On CUDA the weights and inputs are bf16 (--dtype) and every call is timed
between synchronizations (launch overhead included, as the latency evaluator sees it). flash_llm
runs on CUDA, or on CPU under TRITON_INTERPRET=1, where its times are the interpreter's (numpy) and
only smoke-test the path; --quick takes one small shape for that.

    python benchmarks/sparse_kernels.py --threads 1 [--device cuda] [--kernels csr flash_llm] [--tokens 1 16] [--json out.json]
    TRITON_INTERPRET=1 python benchmarks/sparse_kernels.py --device cpu --kernels flash_llm --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SHAPES = {  # name: (in_features, out_features) of the block linears
    "smollm2-135m q/o": (576, 576), "smollm2-135m k/v": (576, 192),
    "smollm2-135m gate/up": (576, 1536), "smollm2-135m down": (1536, 576),
    "7b q/k/v/o": (4096, 4096), "7b gate/up": (4096, 11008), "7b down": (11008, 4096),
}
# --quick: neither dimension a multiple of flash_llm's 64 x 64 tiles, small enough for the interpreter
QUICK_SHAPES = {"quick 150x70": (150, 70)}
SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
QUICK_SPARSITIES = (0.5, 0.9)
KERNELS = ("csr", "flash_llm")
# relative error of a sparse kernel's output against dense F.linear at which the run stops: the
# two sum in different orders; bf16 rounds each output to 2^-8 relative
# relative error of a kernel's output against the float64 product: float32 accumulation, and for
# 16-bit dtypes the output's own rounding (bf16 keeps 8 bits: 2^-9 per element) with headroom
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _time(fn, device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def available_kernels(device: str) -> list[str]:
    from harness.evaluation.sparse_kernels import check_kernel

    out = []
    for name in KERNELS:
        try:
            check_kernel(name, device)
        except ValueError:
            continue
        out.append(name)
    return out


@torch.no_grad()
def run(device: str, dtype: torch.dtype, kernels: list[str], tokens: list[int], repeats: int, shapes: dict,
        sparsities: tuple[float, ...]) -> list[dict]:
    from harness.evaluation.sparse_kernels import SPARSE_KERNELS

    modules = {k: SPARSE_KERNELS.get(k) for k in kernels}
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, (fin, fout) in shapes.items():
        dense = torch.nn.Linear(fin, fout, bias=False)
        base = torch.randn(fout, fin, generator=g)
        for s in sparsities:
            mask = torch.rand(fout, fin, generator=g) >= s                 # random unstructured mask
            dense.weight.data = (base * mask).to(device, dtype)              # [out, in]
            sparse = {k: m(dense) for k, m in modules.items()}
            for t in tokens:
                x = torch.randn(t, fin, generator=g).to(device, dtype)       # [tokens, in]
                want = x.double() @ dense.weight.double().t()                # [tokens, out] float64
                row = {"shape": name, "in": fin, "out": fout, "tokens": t, "sparsity": s,
                       "dense_us": _time(lambda: dense(x), device, repeats) * 1e6}
                row["dense_rel_err"] = _rel_err(dense(x), want)
                for k, mod in sparse.items():
                    err = _rel_err(mod(x), want)
                    # a kernel less accurate than allowed is still timed, but flagged and left out of
                    # its crossover (a fast wrong answer is no speedup)
                    row[f"{k}_accurate"] = err < TOLERANCE[dtype]
                    if not row[f"{k}_accurate"]:
                        print(f"INACCURATE {k} on {name} at {s:.2f}, tokens={t}: relative error {err:.2e} "
                              f"(dense {row['dense_rel_err']:.2e}, limit {TOLERANCE[dtype]:.0e})", flush=True)
                    row[f"{k}_us"] = _time(lambda: mod(x), device, repeats) * 1e6
                    row[f"{k}_speedup"] = row["dense_us"] / row[f"{k}_us"]
                    row[f"{k}_rel_err"] = err
                rows.append(row)
            del sparse
    return rows


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| with `want` the float64 product."""
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-300)).item()


def crossover(rows: list[dict], shape: str, tokens: int, kernel: str = "csr") -> float | None:
    """Lowest sparsity from which `kernel` is faster (and accurate) at this and every higher level."""
    pts = sorted((r["sparsity"], r[f"{kernel}_speedup"] if r.get(f"{kernel}_accurate", True) else 0.0)
                 for r in rows if r["shape"] == shape and r["tokens"] == tokens)
    best = None
    for s, sp in reversed(pts):
        if sp <= 1.0:
            break
        best = s
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="auto: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--kernels", nargs="+", choices=KERNELS, default=None,
                    help="default: every kernel that runs on --device")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--only", default="", help="substring filter on shape names")
    ap.add_argument("--quick", action="store_true", help="one small shape at 50%% and 90%% (interpreter smoke test)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from harness.evaluation.sparse_kernels import check_kernel

    kernels = a.kernels or available_kernels(a.device)
    for k in kernels:
        try:
            check_kernel(k, a.device)
        except ValueError as exc:                                          # one line if it cannot run here
            ap.error(str(exc))
    dtype = getattr(torch, a.dtype) if a.dtype != "auto" else (
        torch.bfloat16 if a.device.startswith("cuda") else torch.float32)
    shapes = {k: v for k, v in (QUICK_SHAPES if a.quick else SHAPES).items() if a.only in k}
    sparsities = QUICK_SPARSITIES if a.quick else SPARSITIES
    rows = run(a.device, dtype, kernels, a.tokens, a.repeats, shapes, sparsities)

    meta = {"device": a.device, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "repeats": a.repeats, "kernels": kernels}
    if a.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    if "flash_llm" in kernels:
        import triton

        from harness.evaluation.flash_llm import BLOCK_K, BLOCK_N, interpreting

        meta.update(triton=triton.__version__, flash_llm_tile=[BLOCK_N, BLOCK_K], triton_interpret=interpreting())
    print(" ".join(f"{k}={v}" for k, v in meta.items()))
    if meta.get("triton_interpret"):
        print("note: flash_llm ran in Triton's interpreter; its times are numpy's, not a kernel's")
    head = f"{'shape':<22}{'tokens':>7}{'sparsity':>9}{'dense_us':>11}"
    head += "".join(f"{k + '_us':>13}{k[:5] + '_x':>9}" for k in kernels)
    print(head)
    for r in rows:
        line = f"{r['shape']:<22}{r['tokens']:>7}{r['sparsity']:>9.2f}{r['dense_us']:>11.1f}"
        line += "".join(f"{r[k + '_us']:>13.1f}{r[k + '_speedup']:>9.2f}" for k in kernels)
        print(line)
    lo, hi = min(sparsities), max(sparsities)
    crossovers = []
    for k in kernels:
        print(f"\ncrossover of {k} (faster than dense from this sparsity upward; '-' = never within "
              f"{lo:.0%}-{hi:.0%}):")
        for name in shapes:
            for t in a.tokens:
                c = crossover(rows, name, t, k)
                crossovers.append({"kernel": k, "shape": name, "tokens": t, "crossover": c})
                print(f"  {name:<22} tokens={t:<3} {'-' if c is None else f'{c:.2f}'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**meta, "rows": rows, "crossovers": crossovers}, f, indent=1)


if __name__ == "__main__":
    main()
