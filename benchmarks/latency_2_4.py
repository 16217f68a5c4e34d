"""Does 2:4 sparsity buy speed? Prefill/decode latency of SmolLM2-135M dense, 2:4-masked on dense
kernels, and 2:4 through torch.sparse.to_sparse_semi_structured (CUDA, bf16/fp16).

Weights: the real SmolLM2-135M when its GGUF package is installed, else a random-init model of the
same geometry (latency does not depend on weight values; recorded as `weights`). The 2:4 mask is
magnitude (data-free), so no calibration data is needed.

    python benchmarks/latency_2_4.py --device cuda --dtype bfloat16 --out results.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
SECTION = {"warmup": 2, "repeats": 5, "prefill": {"batch": [1, 16], "prompt_len": [512, 2048]},
           "decode": {"batch": [1, 32], "prompt_len": 512, "new_tokens": 16}}


def load(device: str, dtype: torch.dtype):
    try:
        from harness.config import compose_config
        from harness.env import default_cache_dir
        from harness.models import load_model

        cfg = compose_config(["model=smollm2-135m"])
        m = load_model(cfg.model.name, dict(cfg.model.source), torch.float32, "cpu",
                       default_cache_dir()).model
        weights = "smollm2-135m (gguf)"
    except Exception as exc:  # noqa: BLE001 - no GGUF on this machine: same geometry, random weights
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        m = LlamaForCausalLM(LlamaConfig(**SMOLLM2))
        weights = f"random-init, SmolLM2-135M geometry ({type(exc).__name__})"
    return m.to(device=device, dtype=dtype).eval(), weights


def main() -> None:
    from harness.adapters import adapter_for
    from harness.blocks.masks import apply_keep_mask, keep_nm
    from harness.evaluation.latency import measure

    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    model, weights = load(a.device, dtype)
    adapter = adapter_for(model)
    results = {"weights": weights, "torch": torch.__version__,
               "dense": measure(model, SECTION, a.device)}
    with torch.no_grad():
        for block in adapter.blocks(model):
            for lin in adapter.linears(block).values():
                apply_keep_mask(lin, keep_nm(lin.weight.data.abs().float(), 2, 4))
    results["nm_2_4_dense_kernels"] = measure(model, SECTION, a.device)
    if a.device.startswith("cuda"):
        results["nm_2_4_semi_structured"] = measure(model, {**SECTION, "semi_structured": True}, a.device)
    for name, r in results.items():
        if not isinstance(r, dict):
            print(f"{name}: {r}")
            continue
        pre = ", ".join(f"b{x['batch']}xL{x['prompt_len']}={x['seconds']['median'] * 1e3:.2f}ms" for x in r["prefill"])
        dec = ", ".join(f"b{x['batch']}={x['ms_per_token']['median']:.2f}ms/tok" for x in r["decode"])
        print(f"{name} [{r['kernel_path']}, {r['dtype']}, {r.get('gpu', r['device'])}]: prefill {pre}; decode {dec}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **results}, f, indent=1)


if __name__ == "__main__":
    main()
