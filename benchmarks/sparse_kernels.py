"""Where does an unstructured-sparse kernel beat the dense GEMM? Decode-shaped linears (a few
tokens x the weight) of SmolLM2-135M and of a LLaMA-2-7B-sized model, at 50-95% sparsity, timed
side by side in one process: dense F.linear vs the latency evaluator's sparse kernels
(harness.evaluation.sparse_kernels). Prints per shape and sparsity the median times, the speedup,
and the crossover (lowest sparsity from which the sparse kernel is faster at every higher level).

Flash-LLM's claim (Xia et al., VLDB 2024) is a crossover at 60-90% on GPU tensor cores; this script
measures the CSR path on whatever device it is given (CPU by default; GPU timing needs --device cuda).

    python benchmarks/sparse_kernels.py --threads 1 [--device cuda] [--tokens 1 16] [--json out.json]
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
SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


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


@torch.no_grad()
def run(device: str, tokens: list[int], repeats: int, shapes: dict) -> list[dict]:
    from harness.evaluation.sparse_kernels import CSRLinear

    g = torch.Generator().manual_seed(0)
    rows = []
    for name, (fin, fout) in shapes.items():
        dense = torch.nn.Linear(fin, fout, bias=False)
        base = torch.randn(fout, fin, generator=g)
        for s in SPARSITIES:
            mask = torch.rand(fout, fin, generator=g) >= s                 # random unstructured mask
            dense.weight.data = (base * mask).to(device)
            sparse = CSRLinear(dense)
            for t in tokens:
                x = torch.randn(t, fin, generator=g).to(device)
                torch.testing.assert_close(sparse(x), dense(x), rtol=1e-3, atol=1e-3)
                td = _time(lambda: dense(x), device, repeats)
                ts = _time(lambda: sparse(x), device, repeats)
                rows.append({"shape": name, "in": fin, "out": fout, "tokens": t, "sparsity": s,
                             "dense_us": td * 1e6, "csr_us": ts * 1e6, "speedup": td / ts})
    return rows


def crossover(rows: list[dict], shape: str, tokens: int) -> float | None:
    """Lowest sparsity from which CSR is faster at this and every higher sparsity level."""
    pts = sorted((r["sparsity"], r["speedup"]) for r in rows if r["shape"] == shape and r["tokens"] == tokens)
    best = None
    for s, sp in reversed(pts):
        if sp <= 1.0:
            break
        best = s
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--only", default="", help="substring filter on shape names")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shapes = {k: v for k, v in SHAPES.items() if a.only in k}
    rows = run(a.device, a.tokens, a.repeats, shapes)
    print(f"device={a.device} threads={torch.get_num_threads()} torch={torch.__version__} repeats={a.repeats}")
    print(f"{'shape':<22}{'tokens':>7}{'sparsity':>9}{'dense_us':>11}{'csr_us':>11}{'speedup':>9}")
    for r in rows:
        print(f"{r['shape']:<22}{r['tokens']:>7}{r['sparsity']:>9.2f}{r['dense_us']:>11.1f}{r['csr_us']:>11.1f}"
              f"{r['speedup']:>9.2f}")
    print("\ncrossover (CSR faster from this sparsity upward; '-' = never within 50-95%):")
    for name in shapes:
        for t in a.tokens:
            c = crossover(rows, name, t)
            print(f"  {name:<22} tokens={t:<3} {'-' if c is None else f'{c:.2f}'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": a.device, "threads": a.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
