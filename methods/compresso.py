"""Compresso: hard-concrete structure masks learnt jointly with LoRA adapters on instruction data, under
a global sparsity constraint, with a "collaborative prompt" telling the model it is being pruned.

Paper: Guo et al., "Compresso: Structured Pruning with Collaborative Prompting Learns Compact Large
Language Models" (2023), arXiv:2310.05015. Reference: microsoft/Moonlit, Compresso/ (train.py,
models/l0_module.py, trainer/compresso_trainer.py, tasks/alpaca.py, lm-evaluation-harness/lm_eval/models/compresso.py).

What the reference's default run (scripts/train.sh) does, and what this does:
  masks       hard-concrete gates (temperature 2/3, stretch (-0.1, 1.1), log_alpha clamped to
              [log 1e-2, log 1e2]) on attention heads, MLP channels and hidden channels
              (pruning_type structured_heads+structured_mlp+hidden), droprate_init 0.01; here the
              shared harness.hard_concrete.StructureMasks with init_keep 0.99.
  constraint  one global Lagrangian lambda1 (s - t) + lambda2 (s - t)^2 on the expected sparsity s of
              the block parameters (heads x hidden, channels x hidden, as the reference's
              get_num_parameters_and_constraint_for_hidden); t ramps linearly from 0 over the
              Lagrangian warm-up (4 of 8 epochs), after one epoch of LoRA-only fine-tuning before
              pruning starts (prepruning_finetune_epochs 1); the lambdas are maximised.
  LoRA        rank 8, alpha 8, on q_proj and v_proj (lora_param Q.V), lr 5e-5; masks and lambdas at
              reg_learning_rate 0.1.
  data        Alpaca-GPT4 behind the collaborative prompt (tasks/alpaca.py: pruning_prompt_input /
              pruning_prompt_no_input), loss on the response only; here instruction JSONL
              (harness.instructions), by default ARC dev questions built at run time.
  result      masks made hard, LoRA merged, and the model cut (harness.hard_concrete
              StructureMasks.prune -> harness.surgery), so it reloads with from_pretrained.
The reference's hardened widths differ per layer (each layer keeps its rounded expected count);
transformers' LLaMA config holds one width per kind, so the hardening here keeps, in every layer,
exactly the widths of harness.width.plan_width for the target (the top units by log_alpha), and the
constraint's final t is that shape's block sparsity.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.context import PruneContext
from harness.width import parse_axes, plan_width
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags

# prunebench width axes -> the shared mask module's structures
_STRUCTURES = {"heads": "heads", "mlp": "intermediate", "hidden": "hidden"}


def target_shape(config, ratio: float, axes: tuple[str, ...], heads: str):
    """The uniform shape harness.width plans for removing `ratio` of all parameters (ModelShape)."""
    from harness.hard_concrete import ModelShape
    from harness.surgery import head_layout

    plan = plan_width(config, ratio, axes, heads)
    n_q, n_kv, _ = head_layout(config)
    kv = plan.kv_groups or n_kv
    return ModelShape(int(config.num_hidden_layers), plan.q_per_group * kv, kv, plan.intermediate, plan.hidden), plan


def block_params(config, total: torch.Tensor | int, hidden) -> torch.Tensor | int:
    """The block linears' parameters out of a total (harness.hard_concrete.param_count, or
    harness.surgery.llama_param_count): the embedding (and an untied head), the final norm and the
    two norms of every block removed, at hidden width `hidden` (a count or its expectation). The
    reference's prunable size counts exactly these (l0_module: params_per_head_layer + params_per_mlp_layer;
    "we ignore the parameters in normalization layers")."""
    tied = getattr(config, "tie_word_embeddings", False)
    norms = (2 * int(config.num_hidden_layers) + 1) * hidden
    return total - config.vocab_size * hidden * (1 if tied else 2) - norms


@register
@dataclass
class Compresso(StructuredMethod):
    axes: str = "heads,mlp,hidden"      # reference pruning_type structured_heads+structured_mlp+hidden
    heads: str = "query"                # query heads inside every KV group (reference LLaMA-1 is MHA)
    corpus: str = "instructions:arc_dev"   # instructions:<file.jsonl> | instructions:arc_dev | c4 (plain text)
    template: str = "collaborative"     # harness.instructions.TEMPLATES; "alpaca": without the system text
    max_examples: int | None = None
    steps: int = 200                    # optimizer steps in all (reference: 8 epochs of Alpaca-GPT4)
    prepruning_fraction: float = 0.125  # LoRA only before the masks start (reference: 1 of 8 epochs)
    warmup_fraction: float = 0.5        # Lagrangian warm-up, of all steps (reference: 4 of 8 epochs)
    batch_size: int = 1                 # reference per_device_train_batch_size 1
    grad_accum: int = 1
    seq_len: int = 1024                 # reference max_seq_length
    lr: float = 5e-5                    # LoRA (reference learning_rate)
    reg_lr: float = 0.1                 # masks and lambdas (reference reg_learning_rate)
    schedule: str = "constant"
    max_grad_norm: float | None = None
    lora_r: int = 8
    lora_alpha: float = 8.0
    lora_targets: str = "q_proj,v_proj"
    init_keep: float = 0.99             # 1 - droprate_init 0.01
    seed: int = 0
    checkpoint_every: int = 0
    stop_after: int | None = None       # simulated preemption after this step (checkpointed)
    latency_repeats: int = 0

    name: ClassVar[str] = "compresso"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Guo et al. 2023, Compresso, arXiv:2310.05015"
    listed: ClassVar[str] = "https://arxiv.org/abs/2310.05015"
    reference: ClassVar[str] = "https://github.com/microsoft/Moonlit/tree/main/Compresso"
    differences: ClassVar[str] = (
        "training data: instruction JSONL in the Alpaca format; the default corpus is the 869 ARC dev questions "
        "(ARC-Easy + ARC-Challenge dev, CC BY-SA 4.0) written as instructions at run time, not Alpaca-GPT4 (52K, "
        "not available offline), so far fewer and shorter responses to learn from; budget: `steps` optimizer "
        "steps at batch 1 instead of 8 epochs (the 1/8 LoRA-only pre-pruning and 4/8 Lagrangian warm-up kept as "
        "fractions of the steps); hardened widths are uniform across layers (harness.width.plan_width for the "
        "target, top log_alpha per layer) where the reference keeps each layer's rounded expected count, so the "
        "constraint's final target is that shape's block sparsity; the target is a fraction of all parameters "
        "(prunebench width targets), the reference's 0.3 is of block parameters; on GQA models (SmolLM2) heads "
        "are query heads inside every KV group, the same number per group, their K/V kept (heads=kv_group gates "
        "whole groups; on MHA models heads=kv_group is the reference's per-head gate); no gradient clipping (the reference "
        "clips the model's gradients at 1.0); constant learning rates (the reference decays the LoRA lr "
        "linearly); the separate post-pruning LoRA fine-tuning stage (finetune.sh) is not part of the method "
        "(recovery=lora is that stage); evaluation: the leaderboard's ppl is scored without the prompt like "
        "every other method, the prompted perplexity (the reference's inference-time prompt) is the separate "
        "ppl_prompted section")
    tags: ClassVar[Tags] = Tags("Structured", "Trainable", "Sparsity-global", "Small-50K", "Efficient-LoRA",
                                "Update", qualifier="hard-concrete heads / MLP / hidden masks + LoRA, collaborative prompt")
    patterns: ClassVar[frozenset[str]] = frozenset({"width"})
    needs_calibration: ClassVar[bool] = False   # trains on its own instruction corpus
    updates_weights: ClassVar[bool] = True
    trains: ClassVar[bool] = True               # gets a checkpoint folder (harness.validate.prune_checkpoint_dir)
    own_training: ClassVar[tuple[str, str]] = ("Efficient-LoRA", "Small")   # run tags without a recovery stage

    def __post_init__(self):
        from harness.instructions import TEMPLATES

        axes = parse_axes(self.axes)
        if self.heads not in ("query", "kv_group"):
            raise ValueError(f"compresso: heads must be query or kv_group, got {self.heads!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"compresso: template must be one of {', '.join(TEMPLATES)}")
        if int(self.steps) < 2 or not 0 <= float(self.prepruning_fraction) < 1 or not 0 <= float(self.warmup_fraction) <= 1:
            raise ValueError("compresso: steps >= 2, prepruning_fraction in [0, 1), warmup_fraction in [0, 1]")
        if self.pruning_steps() < 1:
            raise ValueError("compresso: prepruning_fraction leaves no pruning step")
        if self.stop_after is not None and not 1 <= int(self.stop_after) < int(self.steps):
            raise ValueError("compresso: stop_after must be in [1, steps)")
        if not float(self.lr) > 0 or not float(self.reg_lr) > 0 or int(self.lora_r) < 1:
            raise ValueError("compresso: lr, reg_lr > 0 and lora_r >= 1")
        if not 0 < float(self.init_keep) < 1:
            raise ValueError("compresso: init_keep must be in (0, 1)")
        self._axes = axes

    # -- budget ---------------------------------------------------------------------------------------
    def prepruning_steps(self) -> int:
        return int(round(int(self.steps) * float(self.prepruning_fraction)))

    def pruning_steps(self) -> int:
        return int(self.steps) - self.prepruning_steps()

    def warmup_steps(self) -> int:
        return int(round(int(self.steps) * float(self.warmup_fraction)))

    def _budget(self, steps: int, stop_after: int | None, keep: bool):
        from harness.recovery.budget import Budget

        return Budget(steps=steps, batch_size=int(self.batch_size), seq_len=int(self.seq_len),
                      grad_accum=int(self.grad_accum), lr=float(self.lr), weight_decay=0.0, schedule=self.schedule,
                      warmup_steps=0, max_grad_norm=self.max_grad_norm, corpus=self.corpus, split="train",
                      seed=int(self.seed), checkpoint_every=int(self.checkpoint_every), keep_checkpoints=keep,
                      stop_after=stop_after, keep_sparsity=False)

    def _stops(self) -> tuple[int | None, int | None]:
        """The global stop_after as each phase's own (steps done within the phase); stopping exactly at
        the end of the LoRA-only phase is raised after it (its last checkpoint is kept anyway)."""
        if self.stop_after is None:
            return None, None
        pre = self.prepruning_steps()
        if int(self.stop_after) < pre:
            return int(self.stop_after), None
        if int(self.stop_after) == pre:
            return None, None
        return None, int(self.stop_after) - pre

    # -- the method -----------------------------------------------------------------------------------
    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        cfg = model.config
        shape, plan = target_shape(cfg, ctx.target.ratio, self._axes, self.heads)
        data, windows = self._windows(ctx)
        peft_model = self._add_lora(model)
        lora = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
        torch.manual_seed(int(self.seed))
        stats_pre = self._finetune(peft_model, lora, windows, ctx)
        masks, lag, stats, constraint = self._prune_phase(model, peft_model, lora, windows, ctx, shape, plan)
        merged = peft_model.merge_and_unload()
        assert merged is model   # LoRA folded into q_proj / v_proj of the model itself
        keep = masks.prune(shape)   # deterministic mask values folded into the weights, then cut
        removed = {"hidden_channels": [c for c in range(masks.base.hidden) if c not in set(keep["hidden"])],
                   "kv_groups_kept": keep["kv_groups"], "query_heads_kept": keep["query_heads"],
                   "mlp_channels_per_block": masks.base.intermediate - shape.intermediate}
        return {"width_plan": plan.describe() | {"axes": list(self._axes)}, "target_shape": shape.describe(),
                "base_shape": masks.base.describe(), "removed": removed, "constraint": constraint,
                "training": self._training_report(windows, stats_pre, stats), "corpus": data.info,
                "collaborative_prompt": {"training": self.template == "collaborative",
                                         "evaluation": "ppl: no (the leaderboard's protocol); ppl_prompted: yes"}}

    def _windows(self, ctx: PruneContext):
        """The training windows in training order, [steps * batch * accum, 2, seq_len] (epochs reshuffled)."""
        from harness.instructions import load_training_windows

        data = load_training_windows(self.corpus, ctx.tokenizer, int(self.seq_len), self.template, ctx.data_dir,
                                     ctx.cache_dir, self.max_examples)
        need = int(self.steps) * int(self.batch_size) * int(self.grad_accum)
        n = data.windows.shape[0]
        gen = torch.Generator().manual_seed(int(self.seed))
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])[:need]
        return data, data.windows[order]

    @staticmethod
    def _ce(peft_model):
        from harness.instructions import IGNORE

        def ce(x):   # x [batch, 2, seq_len]: ids, labels (IGNORE off the response and on the padding)
            scored = (x[:, 1] != IGNORE).any(0).nonzero()
            end = int(scored.max()) + 1 if scored.numel() else x.shape[-1]   # right padding past it: causal, unread
            return peft_model(input_ids=x[:, 0, :end], labels=x[:, 1, :end]).loss
        return ce

    def _finetune(self, peft_model, lora: dict, windows: torch.Tensor, ctx: PruneContext) -> dict | None:
        """LoRA alone before the masks start (the reference's pre-pruning fine-tuning epoch)."""
        from harness.recovery.train import Preempted, set_train_mode, train

        pre = self.prepruning_steps()
        stats = None
        if pre:
            b = self._budget(pre, self._stops()[0], keep=True)   # kept: a rerun skips the finished phase
            set_train_mode(peft_model, b)
            per_step = int(self.batch_size) * int(self.grad_accum)
            stats = train(lora, self._ce(peft_model), windows[: pre * per_step], b, ctx.checkpoint_dir,
                          "compresso-finetune", device=ctx.device)
        if self.stop_after is not None and int(self.stop_after) == pre:
            raise Preempted(f"compresso: stopped after step {pre} of {self.steps} (stop_after)")
        return stats

    def _prune_phase(self, model, peft_model, lora: dict, windows: torch.Tensor, ctx: PruneContext, shape, plan):
        """Masks, LoRA and lambdas together under the warmed-up constraint; the resumable shared loop."""
        from harness.hard_concrete import (Lagrangian, StructureMasks, constraint_options, constraint_parameters,
                                           warmup_target)
        from harness.recovery.train import set_eval_mode, set_train_mode, train
        from harness.surgery import llama_param_count

        cfg = model.config
        masks = StructureMasks(model, ctx.adapter, tuple(_STRUCTURES[a] for a in self._axes),
                               head_granularity=self.heads, init_keep=float(self.init_keep), seed=int(self.seed))
        lag = Lagrangian(("global",)).to(next(model.parameters()).device)   # one global constraint
        dense_blocks = float(block_params(cfg, llama_param_count(cfg), cfg.hidden_size))
        t_final = 1.0 - float(block_params(cfg, plan.params_after, shape.hidden)) / dense_blocks
        warm = self.warmup_steps()
        state = {"t": 0.0}
        ce = self._ce(peft_model)

        def expected_sparsity() -> torch.Tensor:   # [] of the block parameters, differentiable
            return 1 - block_params(cfg, masks.expected_params(), masks.expected_counts()["hidden"]) / dense_blocks

        def before(step: int) -> None:
            state["t"] = warmup_target(t_final, step, warm)   # the reference's linear scheduler

        def loss_fn(x):
            return ce(x) + lag({"global": expected_sparsity()}, {"global": state["t"]})

        ratio = float(self.reg_lr) / float(self.lr)
        extra = constraint_parameters(masks, lag)   # at reg_learning_rate, the lambdas ascending
        b = self._budget(self.pruning_steps(), self._stops()[1], keep=False)
        masks.train()
        set_train_mode(peft_model, b)
        per_step = int(self.batch_size) * int(self.grad_accum)
        stats = train(dict(lora) | extra, loss_fn, windows[self.prepruning_steps() * per_step:], b, ctx.checkpoint_dir,
                      "compresso-prune", device=ctx.device,
                      groups=lambda n: constraint_options(n, b.lr * ratio) if n in extra else {}, before_step=before)
        self._drop_finetune_checkpoint(ctx)
        set_eval_mode(peft_model, b)
        with torch.no_grad():
            constraint = {"form": "lambda1*(s-t)+lambda2*(s-t)^2 on the global block-parameter sparsity",
                          "target_block_sparsity": t_final, "expected_block_sparsity_end": float(expected_sparsity()),
                          "warmup_steps": warm, "lambda_1": float(lag.lambdas["global_1"].detach()),
                          "lambda_2": float(lag.lambdas["global_2"].detach()),
                          "expected_counts_end": {k: (v.tolist() if v.dim() else float(v))
                                                  for k, v in masks.expected_counts().items()}}
        return masks, lag, stats, constraint

    @staticmethod
    def _drop_finetune_checkpoint(ctx: PruneContext) -> None:
        ckpt = ctx.checkpoint_dir
        if ckpt is not None and (ckpt / "compresso-finetune").exists():
            shutil.rmtree(ckpt / "compresso-finetune")
            if not any(ckpt.iterdir()):
                ckpt.rmdir()

    def _training_report(self, windows: torch.Tensor, stats_pre: dict | None, stats: dict) -> dict:
        from harness.instructions import IGNORE

        per_step = int(self.batch_size) * int(self.grad_accum)
        return {"steps": int(self.steps), "prepruning_steps": self.prepruning_steps(),
                "pruning_steps": self.pruning_steps(), "batch_size": int(self.batch_size),
                "grad_accum": int(self.grad_accum), "seq_len": int(self.seq_len),
                "train_tokens": int(self.steps) * per_step * int(self.seq_len),
                "scored_tokens": int((windows[:, 1] != IGNORE).sum()),
                "lr": float(self.lr), "reg_lr": float(self.reg_lr), "schedule": self.schedule,
                "lora": {"r": int(self.lora_r), "alpha": float(self.lora_alpha), "targets": self._lora_targets(),
                         "merged": True},
                "finetune": stats_pre, "prune": stats}

    def _lora_targets(self) -> list[str]:
        return sorted({t.strip() for t in self.lora_targets.split(",") if t.strip()})

    def _add_lora(self, model: nn.Module):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=int(self.lora_r), lora_alpha=float(self.lora_alpha), lora_dropout=0.0,
                            target_modules=self._lora_targets(), bias="none", task_type="CAUSAL_LM")
        torch.manual_seed(int(self.seed))   # LoRA A init
        return get_peft_model(model, config)
