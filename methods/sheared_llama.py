"""Sheared LLaMA: targeted structured pruning to a given architecture, then continued pretraining
with dynamic batch loading.

Paper: Xia, Gao, Zeng, Chen, "Sheared LLaMA: Accelerating Language Model Pre-training via Structured
Pruning", ICLR 2024, arXiv:2310.06694. Reference: github.com/princeton-nlp/LLM-Shearing
(llmshearing/models/l0_module.py, scripts/pruning.sh, callbacks/dynamic_loading_callback.py).

Pruning stage (this method): hard-concrete masks over layers, attention heads, MLP channels and
hidden channels (harness.hard_concrete.StructureMasks) learn jointly with the model's weights and
with Lagrange multipliers that pull each structure's expected sparsity to the target shape's
(lambda1 * (s - t) + lambda2 * (s - t)^2, lambdas maximised), the targets ramped linearly over the
Lagrangian warm-up. Batches come from the configured domains with dynamic batch loading
(harness.recovery.domains). Then the masks are hardened to exactly the target shape, the
deterministic mask values folded into the weights and the model physically cut (harness.surgery):
an ordinary LLaMA config that reloads with from_pretrained.
Continued pretraining is the recovery axis: `recovery=continued` (harness/recovery/continued.py),
the same dynamic batch loading over all parameters.

GQA (SmolLM2: 9 query heads in 3 KV groups; the paper's LLaMA-2 is MHA): a target keeping every
KV group masks query heads inside each group and keeps the same number per group; a target with
fewer KV groups masks whole groups (`head_granularity`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from harness.blocks.context import PruneContext
from harness.targets import TargetError
from methods._structured import StructuredMethod
from methods.registry import register
from methods.tags import Tags


@register
@dataclass
class ShearedLlama(StructuredMethod):
    # the pruning run of the reference (scripts/pruning.sh, configs/llama2/7b.yaml)
    steps: int = 3200                   # max_duration 3200ba (0.42B tokens)
    batch_size: int = 32                # global_train_batch_size
    seq_len: int = 4096                 # max_seq_len
    lr: float = 1e-4                    # the model's weights (optimizer.lr)
    lag_lr: float = 1.0                 # masks (descent) and Lagrange multipliers (ascent)
    warmup_steps: int = 320             # lr warm-up, 10% (scheduler.t_warmup)
    lagrangian_warmup_steps: int = 640  # target sparsity ramp, 20% (l0_module.lagrangian_warmup_steps)
    schedule: str = "cosine"            # cosine_with_warmup (alpha_f 0.1 in the reference)
    max_grad_norm: float = 1.0          # gradient_clipping norm 1.0
    train_weights: bool = True          # the reference trains the model's weights with the masks
    structures: str = "layers,heads,intermediate,hidden"   # pruning_modules [head,intermediate,layer,hidden]
    head_granularity: str = "auto"      # auto | query | kv_group (GQA; see the module docstring)
    init_log_alpha: float = 5.0         # l0_module: log_alpha ~ N(5, 0.01)
    temperature: float = 2 / 3
    # dynamic batch loading while pruning (callbacks.data_loading); the reference's 7 RedPajama domains
    domains: str = "c4/train"           # comma-separated corpus/split of harness.data
    proportion: str = ""                # comma-separated initial proportions ("" = uniform)
    update_every: int = 50              # eval_interval 50ba: held-out losses -> new proportions
    update_type: str = "doremi"
    clip_gap: bool = False              # the paper's max(loss - ref, 0); the reference code's signed gap
    reference_loss: str = "dense"       # "dense": each domain's held-out loss of the unpruned model, or
                                        # comma-separated numbers (the reference: scaling-law predictions)
    heldout_docs: int = 32
    heldout_windows: int = 8
    max_docs: int | None = None
    checkpoint_every: int = 0           # mask-learning checkpoints (in the run's checkpoint folder); 0: none
    stop_after: int | None = None       # simulate preemption after this step (a rerun resumes)

    name: ClassVar[str] = "sheared_llama"
    version: ClassVar[str] = "1"
    paper: ClassVar[str] = "Xia et al. 2024, Sheared LLaMA, ICLR 2024, arXiv:2310.06694"
    listed: ClassVar[str] = "https://arxiv.org/abs/2310.06694"
    reference: ClassVar[str] = "https://github.com/princeton-nlp/LLM-Shearing"
    differences: ClassVar[str] = (
        "data: the RedPajama domains (cc, github, book, stackexchange, wiki, arxiv, c4-rp) are not here; the domains "
        "are local corpora (default c4/train alone, where dynamic loading reduces to plain training); reference "
        "losses are the unpruned model's held-out loss per domain (the reference uses scaling-law predictions "
        "for the target size, which need a model family of that size); budgets (steps, batch_size, seq_len, "
        "update_every, warm-ups) are set per run and recorded (the reference: 3200 steps x 32 x 4096); the lr "
        "schedule is transformers' cosine to 0 after warm-up (the reference decays to 0.1 x lr); AdamW (the "
        "reference's decoupled AdamW, betas 0.9/0.95; here torch's 0.9/0.999); fp32 on CPU, no FSDP; GQA heads "
        "are masked per query head inside each kept KV group, or per whole KV group (LLaMA-2 is MHA); the hidden "
        "mask zeroes residual channels and the RMS norms see the zeros (surgery rescales the norms so the cut "
        "model computes the same), the reference renormalises over the kept channels while training; the "
        "deterministic eval mask keeps each row's rounded expected count (eval_target_model=false)")
    tags: ClassVar[Tags] = Tags("Structured", "Trainable", "Sparsity-mix", "Medium~50B", "Extensive", "Update",
                                qualifier="L0 masks to a target shape + dynamic batch loading")
    patterns: ClassVar[frozenset[str]] = frozenset({"shape"})
    needs_calibration: ClassVar[bool] = False   # it reads its own training domains ...
    uses_data: ClassVar[bool] = True            # ... so a run without recovery is not "Data free"
    updates_weights: ClassVar[bool] = True
    trains: ClassVar[bool] = True               # gets a checkpoint folder (harness.validate.prune_checkpoint_dir)

    def __post_init__(self):
        from harness.hard_concrete import HEAD_GRANULARITIES, STRUCTURES
        from harness.recovery.domains import UPDATE_TYPES, parse_domains

        bad = [s for s in self._structures() if s not in STRUCTURES]
        if bad or not self._structures():
            raise ValueError(f"sheared_llama: structures must be a subset of {STRUCTURES}, got {self.structures!r}")
        if self.head_granularity not in ("auto", *HEAD_GRANULARITIES):
            raise ValueError("sheared_llama: head_granularity must be auto, query or kv_group")
        if self.update_type not in UPDATE_TYPES:
            raise ValueError(f"sheared_llama: update_type must be one of {UPDATE_TYPES}")
        n = len(parse_domains(self._split(self.domains)))
        if self.proportion and len(self._floats(self.proportion)) != n:
            raise ValueError(f"sheared_llama: proportion needs {n} values")
        if self.reference_loss != "dense" and len(self._floats(self.reference_loss)) != n:
            raise ValueError(f"sheared_llama: reference_loss is 'dense' or {n} numbers")
        if int(self.steps) < 1 or not 0 <= int(self.lagrangian_warmup_steps):
            raise ValueError("sheared_llama: steps must be >= 1 and lagrangian_warmup_steps >= 0")

    @staticmethod
    def _split(text: str) -> list[str]:
        return [t.strip() for t in str(text).split(",") if t.strip()]

    def _floats(self, text: str) -> list[float]:
        return [float(t) for t in self._split(text)]

    def _structures(self) -> tuple[str, ...]:
        return tuple(self._split(self.structures))

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        from harness.hard_concrete import ModelShape

        try:
            self._shape(ctx).check_reachable(ModelShape.of(model.config), self._structures(),
                                             self._granularity(model, ctx))
        except ValueError as exc:
            raise TargetError(f"sheared_llama: {exc}") from None

    def _shape(self, ctx: PruneContext):
        from harness.hard_concrete import ModelShape

        return ModelShape(**ctx.target.shape_dict)

    def _granularity(self, model: nn.Module, ctx: PruneContext) -> str:
        if self.head_granularity != "auto":
            return self.head_granularity
        from harness.surgery import head_layout

        return "query" if self._shape(ctx).kv_heads == head_layout(model.config)[1] else "kv_group"

    # ------------------------------------------------------------------------------------------------
    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        from harness.hard_concrete import ModelShape, StructureMasks, param_count

        shape = self._shape(ctx)
        cfg = model.config
        base = ModelShape.of(cfg)
        params_target = int(param_count(cfg, shape.layers, shape.heads, shape.kv_heads, shape.intermediate,
                                         shape.hidden))
        source = self._batches(model, ctx)
        masks = StructureMasks(model, ctx.adapter, self._structures(), self._granularity(model, ctx),
                               init_log_alpha=self.init_log_alpha, temperature=self.temperature, seed=ctx.seed)
        learnt = self._learn(model, masks, source, shape, ctx)
        expected = {k: _round(v) for k, v in masks.expected_counts().items()}
        keep = masks.prune(shape)
        got = ModelShape.of(cfg)
        params_after = sum(p.numel() for p in model.parameters())
        if got != shape or params_after != params_target:
            raise RuntimeError(f"sheared_llama: pruned to {got} with {params_after} parameters, the target asks "
                               f"{shape} with {params_target}")
        return {"shape_before": base.describe(), "shape_target": shape.describe(), "shape_after": got.describe(),
                "params_target": params_target, "params_after": params_after,
                "head_granularity": masks.head_granularity, "structures": list(masks.structures),
                "expected_counts_at_end": expected, "mask_learning": learnt,
                "dynamic_loading": source.describe(),
                "removed": {"unit": "shape", "layers": [i for i in range(base.layers) if i not in keep["layers"]],
                            "hidden_channels": base.hidden - len(keep["hidden"])}}

    def _budget(self):
        from harness.recovery.budget import parse_budget

        return parse_budget({"steps": self.steps, "batch_size": self.batch_size, "seq_len": self.seq_len,
                             "lr": self.lr, "schedule": self.schedule, "warmup_steps": self.warmup_steps,
                             "max_grad_norm": self.max_grad_norm, "checkpoint_every": self.checkpoint_every,
                             "stop_after": self.stop_after, "heldout_docs": self.heldout_docs,
                             "heldout_windows": self.heldout_windows, "max_docs": self.max_docs,
                             "keep_sparsity": False}, set(), self.name)

    def _batches(self, model: nn.Module, ctx: PruneContext):
        """The domains' windows, their reference losses, and the dynamic batch source."""
        from harness.recovery.domains import DynamicBatches, load_domain, parse_domains
        from harness.recovery.train import lm_loss

        b = self._budget()
        domains = [load_domain(ctx.tokenizer, c, s, b.seq_len, b.heldout_docs, b.heldout_windows, ctx.data_dir,
                               b.max_docs) for c, s in parse_domains(self._split(self.domains))]
        refs = (self._floats(self.reference_loss) if self.reference_loss != "dense"
                else [lm_loss(model, d.heldout, ctx.device) for d in domains])   # the unpruned model's
        for d, r in zip(domains, refs):
            d.reference_loss = float(r)
        return DynamicBatches(domains, self._floats(self.proportion) or None, b.windows_per_step,
                              self.update_every, self.update_type, seed=ctx.seed, clip_gap=self.clip_gap)

    def _learn(self, model: nn.Module, masks, source, shape, ctx: PruneContext) -> dict:
        """The mask-learning loop (harness.recovery.train): LM loss + Lagrangian, masks and model
        descend, lambdas ascend; checkpointed and resumable like every recovery."""
        from harness.hard_concrete import Lagrangian, constraint_options, constraint_parameters, warmup_target
        from harness.recovery.train import lm_loss, set_eval_mode, set_train_mode, train

        b = self._budget()
        lag = Lagrangian(masks.structures).to(next(model.parameters()).device)
        final = masks.target_sparsity(shape)
        log = _MaskLog(source)
        params = constraint_parameters(masks, lag)
        if self.train_weights:
            params |= {f"model.{n}": p for n, p in model.named_parameters()}
        for p in params.values():
            p.requires_grad_(True)

        def groups(name: str) -> dict:
            return {"lr": float(self.lr)} if name.startswith("model.") else constraint_options(name, float(self.lag_lr))

        def loss_fn(x):   # x: [batch, seq_len]
            target = {s: warmup_target(final[s], source.step, int(self.lagrangian_warmup_steps))
                      for s in masks.structures}
            lm = model(input_ids=x, labels=x).loss
            lagrangian = lag(masks.expected_sparsity(), target)
            log.last = (float(lm.detach()), float(lagrangian.detach()))
            return lm + lagrangian

        def after_step(_done: int):
            masks.eval()    # held-out losses with the deterministic masks (the reference's eval)
            source.maybe_update(lambda w: lm_loss(model, w, ctx.device))
            masks.train()
            log.record(source.step, masks, lag)

        torch.manual_seed(ctx.seed)   # mask samples; a resumed run restores the RNG from its checkpoint
        set_train_mode(model, b)
        masks.train()
        try:
            stats = train(params, loss_fn, source, b, ctx.checkpoint_dir, "masks", after_step=after_step,
                          device=ctx.device, groups=groups, extra_state=log)
        finally:
            set_eval_mode(model, b)
            masks.eval()
        return {"budget": b.describe(), "lag_lr": self.lag_lr, "lagrangian_warmup_steps": self.lagrangian_warmup_steps,
                "target_sparsity": {s: round(final[s], 5) for s in masks.structures},
                "lambdas_final": {n: round(float(p.detach()), 5) for n, p in lag.lambdas.items()},
                "curve": log.curve} | stats


class _MaskLog:
    """Per-step LM loss, Lagrangian and expected sizes, checkpointed with the batch source's state so
    the report of a resumed run equals the uninterrupted one."""

    def __init__(self, source):
        self.source = source
        self.curve: list[dict] = []
        self.last = (float("nan"), float("nan"))

    def record(self, step: int, masks, lag) -> None:
        counts = masks.expected_counts()
        self.curve.append({"step": step + 1, "lm_loss": round(self.last[0], 5), "lagrangian": round(self.last[1], 5),
                           "expected_params": int(masks.expected_params().detach()),
                           **{f"expected_{k}": _round(counts[k]) for k in masks.structures}})

    def state_dict(self) -> dict:
        return {"source": self.source.state_dict(), "curve": json.dumps(self.curve)}

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state["source"])
        self.curve = json.loads(state["curve"])


def _round(v: torch.Tensor):
    """A count tensor for the report: mean over layers for per-layer counts, 3 decimals."""
    v = v.detach()
    return round(float(v.mean() if v.dim() else v), 3)
