"""KPrune on CUDA vs CPU on a tiny random-init BERT with synthetic sample batches (no data files):
the FLOPs budget is met on both devices and the pruned models agree.

    python benchmarks/kprune_cuda_check.py
"""

from __future__ import annotations

import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.encoders import encoder_flops
from harness.models import build_random_init
from harness.targets import Target
from methods.registry import build_method


def run(device: str) -> tuple[dict, torch.Tensor]:
    model, tok = build_random_init("bert", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_labels=2), 0)
    model = model.eval().to(device)
    g = torch.Generator().manual_seed(0)
    batched = [{"input_ids": torch.randint(5, 250, (8, 24), generator=g).to(device),
                "attention_mask": torch.ones(8, 24, dtype=torch.long, device=device)} for _ in range(4)]
    method = build_method("kprune", {})
    method.sample = lambda ctx: (batched, {"mean_seq_len": 24.0})     # synthetic rows, same on both devices
    ctx = PruneContext(adapter=adapter_for(model), target=Target("flops_60", "flops", 0.4), calibration=None,
                       allocator=None, device=device, tokenizer=tok)
    report = method.prune(model, ctx)
    assert encoder_flops(model, ctx.adapter, 24.0)["flops"] == report["flops_after"] <= 0.6 * report["flops_before"]
    with torch.no_grad():
        logits = model(**batched[0]).logits.float().cpu()
    return report, logits


if __name__ == "__main__":
    cpu, cpu_logits = run("cpu")
    print("cpu ", cpu["flops_ratio"], cpu["kept_per_sublayer"])
    if torch.cuda.is_available():
        cuda, cuda_logits = run("cuda")
        print("cuda", cuda["flops_ratio"], cuda["kept_per_sublayer"], torch.cuda.get_device_name())
        print("same masks:", cpu["kept_per_sublayer"] == cuda["kept_per_sublayer"],
              "max |logit diff|:", float((cpu_logits - cuda_logits).abs().max()))
    else:
        print("no CUDA device")
