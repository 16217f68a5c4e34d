"""Perplexity-evaluation throughput vs the bare model forward on the same windows.

Target: the evaluator reaches >= 0.9x the bare forward's tokens/s.

    python benchmarks/bench_ppl_throughput.py [--seq-len 512] [--windows 8] [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness.env import configure_runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    configure_runtime(args.threads)

    import torch

    from harness.config import compose_config
    from harness.data import eval_text, resolve_data_dir
    from harness.env import default_cache_dir, resolve_device, resolve_dtype
    from harness.evaluation.ppl import tokenize_windows, window_nll
    from harness.models import load_model

    device = resolve_device(args.device)
    cfg = compose_config(["model=smollm2-135m"])
    lm = load_model(cfg.model.name, dict(cfg.model.source), resolve_dtype("auto", device), device,
                    cfg.paths.cache_dir or default_cache_dir())
    text, _ = eval_text("wikitext2", None, resolve_data_dir(None))
    windows = tokenize_windows(lm.tokenizer, text, args.seq_len, args.windows)   # [n, seq]
    n_tokens = windows.numel()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    @torch.no_grad()
    def bare():
        for s in range(0, windows.shape[0], args.batch_size):
            lm.model(windows[s:s + args.batch_size].to(device), use_cache=False).logits
        sync()

    def evaluator():
        window_nll(lm.model, windows, args.batch_size, device, progress=False)
        sync()

    bare()  # warm-up
    rates = {"bare forward": [], "ppl evaluator": []}
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        for name, fn in (("bare forward", bare), ("ppl evaluator", evaluator)):
            t = time.perf_counter()
            fn()
            rates[name].append(n_tokens / (time.perf_counter() - t))
    print(f"device={device} threads={torch.get_num_threads()} seq_len={args.seq_len} windows={args.windows} "
          f"batch={args.batch_size} tokens/run={n_tokens}")
    for name, values in rates.items():
        print(f"{name:>14}: median {statistics.median(values):8.1f} tok/s  (min {min(values):.1f}, max {max(values):.1f})")
    ratio = statistics.median(rates["ppl evaluator"]) / statistics.median(rates["bare forward"])
    print(f"ratio evaluator/bare = {ratio:.3f}  (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
