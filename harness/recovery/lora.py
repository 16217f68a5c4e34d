"""LoRA recovery through peft, merged back into the dense weights afterwards.

LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685); as a
pruning recovery: LLM-Pruner (Ma et al. 2023, arXiv:2305.11627) and Wanda/SparseGPT follow-ups.
Adapters are trained on the recovery corpus with the causal-LM loss, merged with
`merge_and_unload`, and the pruning masks captured before training are re-applied to the merged
weights, so pruned weights stay exactly zero (a masked merge: W + (B A) * M).
"""

from __future__ import annotations

import torch

from harness.recovery.train import finish, set_eval_mode, set_train_mode, start, train
from harness.errors import ConfigError

OWN_KEYS = {"r", "alpha", "dropout", "target_modules"}


def check(params: dict) -> None:
    """This recovery's own keys; the shared budget is parsed once, by harness.recovery.check_recovery."""
    if int(params.get("r", 8)) < 1:
        raise ConfigError("recovery lora: r must be >= 1")
    if not 0 <= float(params.get("dropout", 0.0)) < 1:
        raise ConfigError("recovery lora: dropout must be in [0, 1)")


def recover(model, tokenizer, params: dict, ctx) -> dict:
    from peft import LoraConfig, get_peft_model

    check(params)
    s = start(model, tokenizer, params, ctx, OWN_KEYS, "lora")
    b = s.budget
    targets = list(params.get("target_modules") or ctx.adapter.linear_names())
    targets = sorted({t.split(".")[-1] for t in targets})  # peft matches module-name suffixes
    config = LoraConfig(r=int(params.get("r", 8)), lora_alpha=float(params.get("alpha", 16)),
                        lora_dropout=float(params.get("dropout", 0.0)), target_modules=targets,
                        bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(b.seed)  # LoRA A init
    peft_model = get_peft_model(model, config)
    set_train_mode(peft_model, b)
    if b.gradient_checkpointing:
        peft_model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks need a grad input
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}

    def loss_fn(x):  # x: [batch, seq_len]
        return peft_model(input_ids=x, labels=x).loss

    stats = train(trainable, loss_fn, s.corpus.train, b, ctx.checkpoint_dir, "lora", device=ctx.device)
    set_eval_mode(peft_model, b)
    from harness.recovery.train import lm_loss

    s.report["heldout_loss_unmerged"] = lm_loss(peft_model, s.corpus.heldout, ctx.device)
    merged = peft_model.merge_and_unload()
    assert merged is model  # merge_and_unload returns the base model with merged weights
    s.report |= stats | {"lora": {"r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                                  "target_modules": targets, "merged": True}}
    return finish(model, s, ctx)
