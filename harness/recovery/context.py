"""What a recovery receives: the prune context plus what training needs beyond it.

Built by `recovery_context` in harness/run.py right before the recover stage. The dense teacher
(kd, replace) is reloaded from the same model source rather than kept in memory through pruning,
and its sha256 is checked against the weights the run pruned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.blocks.context import PruneContext


@dataclass
class RecoveryContext:
    prune: PruneContext                       # adapter, target, seed
    run_id: str
    device: str
    dtype: Any                                # torch.dtype of the pruned model
    data_dir: Path | None
    checkpoint_dir: Path | None               # None: no checkpoints (tests that want none)
    eval_texts: list[tuple[str, str]] = field(default_factory=list)  # (corpus, split) never trained on
    model_cfg: dict | None = None             # name/source/allow_pickle: reloads the dense teacher
    budget: Any = None                        # the training budget validation parsed (None: parsed from params)
    model_sha256: str | None = None           # of the weights that were pruned
    prune_report: dict = field(default_factory=dict)
    seed: int = 0
    teacher_factory: Any = None               # tests: callable -> (model, tokenizer) instead of a reload
    evals: list = field(default_factory=list)  # the run's (evaluator, section) pairs (qat: ppl before training)
    method: Any = None                        # the run's method (qat asks it for a gradual-pruning hook)

    @property
    def adapter(self):
        return self.prune.adapter

    def removed_blocks(self) -> list[int] | None:
        """Original indices of the blocks a structured method removed (its report's `removed`)."""
        removed = self.prune_report.get("removed")  # structured methods: {"unit", "indices", ...}
        if isinstance(removed, dict) and removed.get("unit") == "block":
            return sorted(int(i) for i in removed["indices"])
        return None

    def load_teacher(self) -> tuple[Any, Any, dict]:
        """The unpruned model, frozen, in eval mode; plus a description for the record."""
        if self.teacher_factory is not None:
            model, tokenizer = self.teacher_factory()
            info = {"source": "factory"}
        else:
            from harness.env import default_cache_dir
            from harness.models import load_model

            if self.model_cfg is None:
                raise ValueError("no model config to reload the dense teacher from")
            loaded = load_model(self.model_cfg["name"], self.model_cfg["source"], self.dtype, self.device,
                                self.prune.cache_dir or default_cache_dir(),
                                allow_pickle=bool(self.model_cfg.get("allow_pickle", False)), seed=self.seed)
            if self.model_sha256 and loaded.sha256 != self.model_sha256:
                raise ValueError(f"teacher weights sha256 {loaded.sha256[:12]} differ from the pruned "
                                 f"model's {self.model_sha256[:12]}")
            model, tokenizer = loaded.model, loaded.tokenizer
            info = {"name": loaded.name, "source": copy.deepcopy(loaded.source), "sha256": loaded.sha256}
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model, tokenizer, info


def recovery_context(plan, ctx: PruneContext, run_id: str, model_sha256: str | None,
                     prune_report: dict) -> RecoveryContext:
    """Assemble the RecoveryContext for run.py from the validated plan (harness.validate.RecoveryPlan)."""
    rp = plan.recovery_plan
    return RecoveryContext(prune=ctx, run_id=run_id, device=plan.device, dtype=plan.dtype,
                           data_dir=plan.data_dir, checkpoint_dir=rp.checkpoint_dir,
                           eval_texts=list(rp.eval_texts), model_cfg=plan.model.as_dict(),
                           model_sha256=model_sha256, prune_report=prune_report or {},
                           seed=plan.seed, budget=rp.budget, evals=list(plan.evals), method=plan.method)
