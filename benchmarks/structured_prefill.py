"""CPU prefill latency of SmolLM2-135M-shaped models before/after structured pruning.

Latency depends only on the architecture, so this builds random-init models with the shapes the
structured_smollm2 result set holds (no weights needed) and times them *interleaved* (round-robin, min over
rounds), which is far less sensitive to other load on a shared machine than the before/after
timings taken inside each run. Prints one line per architecture.

    PYTHONPATH=$PWD python benchmarks/structured_prefill.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import time

import torch

SMOL = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64, tie_word_embeddings=True, max_position_embeddings=2048)


def build(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness import surgery
    from harness.adapters import adapter_for

    cfg = dict(SMOL)
    drop = None
    if name == "depth_25 (22 blocks)":
        cfg["num_hidden_layers"] = 22
    elif name.startswith("sublayers"):
        drop = "attn" if "attn" in name else "mlp"
    elif name == "heads 2/3 + mlp 1145 (llm_pruner 20%)":
        cfg.update(num_attention_heads=6, intermediate_size=1145)
    elif name == "mlp 1314 + hidden 504 (minitron 20%)":
        cfg.update(intermediate_size=1314, hidden_size=504)
    elif name == "mlp 1221 + hidden 459 (minitron 30%)":
        cfg.update(intermediate_size=1221, hidden_size=459)
    elif name == "heads 2/3 + mlp 886 (llm_pruner 30%)":
        cfg.update(num_attention_heads=6, intermediate_size=886)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    if drop:
        ad = adapter_for(model)
        for i in range(8):
            surgery.drop_sublayer(model, ad, i, drop)
    return model


NAMES = ["dense", "depth_25 (22 blocks)", "sublayers attn x8", "sublayers mlp x8",
         "heads 2/3 + mlp 1145 (llm_pruner 20%)", "mlp 1314 + hidden 504 (minitron 20%)",
         "heads 2/3 + mlp 886 (llm_pruner 30%)", "mlp 1221 + hidden 459 (minitron 30%)"]


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {n: build(n) for n in NAMES}
    ids = torch.randint(0, SMOL["vocab_size"], (1, args.seq), generator=torch.Generator().manual_seed(0))
    times = {n: [] for n in NAMES}
    for m in models.values():  # warm-up
        m(ids, use_cache=False)
    for _ in range(args.rounds):
        for n, m in models.items():
            t = time.perf_counter()
            m(ids, use_cache=False)
            times[n].append(time.perf_counter() - t)
    base = min(times["dense"])
    print(f"prefill 1x{args.seq}, {args.threads} thread(s), min over {args.rounds} interleaved rounds")
    for n in NAMES:
        params = sum(p.numel() for p in models[n].parameters())
        print(f"{n:40s} params {params:>11,}  min {min(times[n]):.3f} s  speedup {base / min(times[n]):.2f}x")


if __name__ == "__main__":
    main()
