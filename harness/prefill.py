"""A simple CPU prefill-latency probe for structured pruning records (protocol `prefill_cpu`,
version 1): one forward over 1 x seq_len random tokens without KV cache, `warmup` untimed runs,
then the median of `repeats` timed runs, at the run's pinned thread count.

The latency evaluator (harness/evaluation/latency.py) is the measured protocol; this probe lets
structured methods record a prefill time before and after surgery in `prune_report.latency` so the speed-up is visible in the same run.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

PROTOCOL = {"name": "prefill_cpu", "version": "1"}


@torch.no_grad()
def prefill_latency(model: nn.Module, seq_len: int = 512, warmup: int = 1, repeats: int = 5,
                    seed: int = 0) -> dict:
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, seq_len), generator=torch.Generator().manual_seed(seed)).to(device)
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        model(ids, use_cache=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return {"protocol": PROTOCOL, "batch": 1, "seq_len": seq_len, "warmup": warmup, "repeats": repeats,
            "threads": torch.get_num_threads(), "median_s": statistics.median(times), "min_s": min(times),
            "times_s": times}
