"""Logit distillation from the dense (unpruned) teacher, with optional teacher correction.

Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation", arXiv:2407.14679; Sreenivas et al. 2024, "LLM Pruning and Distillation in Practice:
The Minitron Approach", arXiv:2408.11796): the pruned student is retrained with the forward KL
divergence between teacher and student next-token distributions; "teacher correction" first
fine-tunes the teacher briefly on the distillation corpus, because the original pre-training data
is unavailable. Loss = kl_weight * T^2 * KL(p_T || p_S) at temperature T + ce_weight * CE.
The teacher is the unpruned model reloaded from the run's model source (sha256 checked).
Differences: Minitron distils on ~100B tokens with full-model updates; here the budget is small
and `trainable` may restrict updates to the last k blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.recovery.budget import parse_budget
from harness.recovery.train import (apply_masks, block_prefixes, finish, last_blocks, set_eval_mode, set_train_mode,
                                    start, train)
from harness.errors import ConfigError

OWN_KEYS = {"temperature", "kl_weight", "ce_weight", "trainable", "teacher_correction_steps",
            "teacher_correction_lr"}


def check(params: dict) -> None:
    """This recovery's own keys; the shared budget is parsed once, by harness.recovery.check_recovery."""
    if not float(params.get("temperature", 1.0)) > 0:
        raise ConfigError("recovery kd: temperature must be > 0")
    if float(params.get("kl_weight", 1.0)) < 0 or float(params.get("ce_weight", 0.0)) < 0:
        raise ConfigError("recovery kd: kl_weight and ce_weight must be >= 0")
    if float(params.get("kl_weight", 1.0)) == 0 and float(params.get("ce_weight", 0.0)) == 0:
        raise ConfigError("recovery kd: kl_weight and ce_weight are both 0")
    trainable = params.get("trainable", "all")
    if trainable != "all" and not (isinstance(trainable, int) and trainable >= 1):
        raise ConfigError("recovery kd: trainable must be 'all' or a number of last blocks >= 1")
    if int(params.get("teacher_correction_steps", 0)) < 0:
        raise ConfigError("recovery kd: teacher_correction_steps must be >= 0")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, kl_weight: float, ce_weight: float) -> torch.Tensor:
    """student/teacher logits [batch, seq, vocab], labels [batch, seq] (next-token shift inside)."""
    s = student_logits[:, :-1].float()
    t = teacher_logits[:, :-1].float()
    loss = s.new_zeros(())
    if kl_weight:
        log_p_s = F.log_softmax(s / temperature, dim=-1)
        log_p_t = F.log_softmax(t / temperature, dim=-1)
        kl = F.kl_div(log_p_s.flatten(0, 1), log_p_t.flatten(0, 1), log_target=True, reduction="batchmean")
        loss = loss + kl_weight * temperature ** 2 * kl
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(s.flatten(0, 1), labels[:, 1:].flatten())
    return loss


def _correct_teacher(teacher, s, params: dict, ctx) -> dict:
    """Minitron teacher correction: a short CE fine-tune of the teacher on the recovery corpus."""
    steps = int(params.get("teacher_correction_steps", 0))
    budget = parse_budget({k: v for k, v in params.items() if k not in OWN_KEYS and k != "stop_after"}
                          | {"steps": steps, "tokens": None,
                             "lr": float(params.get("teacher_correction_lr") or s.budget.lr),
                             "warmup_steps": 0, "seed": s.budget.seed + 1}, set(), "kd")
    gen = torch.Generator().manual_seed(budget.seed)
    windows = s.corpus.train[torch.randperm(len(s.corpus.train), generator=gen)]
    windows = windows.repeat(-(-steps * budget.windows_per_step // len(windows)), 1)
    params_t = dict(teacher.named_parameters())
    for p in params_t.values():
        p.requires_grad_(True)
    set_train_mode(teacher, budget)

    def loss_fn(x):
        return teacher(input_ids=x, labels=x).loss

    stats = train(params_t, loss_fn, windows, budget, ctx.checkpoint_dir, "kd-teacher", device=ctx.device)
    set_eval_mode(teacher, budget)
    return {"steps": steps, "lr": budget.lr, "train_loss_first": stats["train_loss_first"],
            "train_loss_last": stats["train_loss_last"]}


def recover(model, tokenizer, params: dict, ctx) -> dict:
    check(params)
    s = start(model, tokenizer, params, ctx, OWN_KEYS, "kd")
    teacher, _, teacher_info = ctx.load_teacher()
    from harness.recovery.train import lm_loss

    teacher_info["heldout_loss"] = lm_loss(teacher, s.corpus.heldout, ctx.device)
    if int(params.get("teacher_correction_steps", 0)) > 0:
        teacher_info["correction"] = _correct_teacher(teacher, s, params, ctx)
        teacher_info["heldout_loss_corrected"] = lm_loss(teacher, s.corpus.heldout, ctx.device)
    temperature = float(params.get("temperature", 1.0))
    kl_weight, ce_weight = float(params.get("kl_weight", 1.0)), float(params.get("ce_weight", 0.0))

    choice = params.get("trainable", "all")
    if choice == "all":
        trainable = dict(model.named_parameters())
    else:
        prefixes = block_prefixes(ctx.adapter, last_blocks(len(ctx.adapter.blocks(model)), int(choice)))
        trainable = {k: p for k, p in model.named_parameters() if k.startswith(prefixes)}
    for k, p in model.named_parameters():
        p.requires_grad_(k in trainable)
    set_train_mode(model, s.budget)

    def loss_fn(x):  # x: [batch, seq_len]
        with torch.no_grad():
            t_logits = teacher(input_ids=x).logits      # [batch, seq, vocab]
        return kd_loss(model(input_ids=x).logits, t_logits, x, temperature, kl_weight, ce_weight)

    @torch.no_grad()
    def heldout_kd(student) -> float:  # the distillation objective on held-out windows
        was = student.training
        student.eval()
        xs = s.corpus.heldout.to(ctx.device)
        losses = [float(loss_fn(xs[i:i + s.budget.batch_size])) for i in range(0, len(xs), s.budget.batch_size)]
        student.train(was)
        return sum(losses) / len(losses)

    s.report["heldout_kd_loss_before"] = heldout_kd(model)
    masks = {k: m for k, m in s.masks.items() if k in trainable}
    stats = train(trainable, loss_fn, s.corpus.train, s.budget, ctx.checkpoint_dir, "kd",
                  after_step=lambda _step: apply_masks(model, masks), device=ctx.device)
    set_eval_mode(model, s.budget)
    s.report["heldout_kd_loss_after"] = heldout_kd(model)
    del teacher
    s.report |= stats | {"kd": {"temperature": temperature, "kl_weight": kl_weight, "ce_weight": ce_weight,
                                "trainable": choice, "teacher": teacher_info}}
    return finish(model, s, ctx)
