"""Shared lifecycle of structured methods (depth and width): check the layout supports surgery,
time prefill before/after, report what was removed. Not a method itself (module name starts
with "_", so the registry skips it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from harness.blocks.context import PruneContext
from harness.targets import TargetError
from methods.base import Method


@dataclass
class StructuredMethod(Method):
    latency_repeats: int = 3        # CPU prefill timing before/after surgery (0 = skip)

    patterns: ClassVar[frozenset[str]] = frozenset()
    # width surgery (heads, MLP channels, hidden channels) needs separate q/k/v linears and a dense
    # MLP (FamilyAdapter.supports_surgery); depth surgery (whole blocks) works on every layout
    needs_width_surgery: ClassVar[bool] = True

    def check(self, model: nn.Module, ctx: PruneContext) -> None:
        super().check(model, ctx)
        if self.needs_width_surgery and not ctx.adapter.supports_surgery:
            raise TargetError(f"method {self.name} needs width surgery, which does not apply to family "
                              f"{ctx.adapter.family!r}: {ctx.adapter.width_blocker}")

    def surgery(self, model: nn.Module, ctx: PruneContext) -> dict:
        """Change the model's shape; returns the report entries (what was removed and why)."""
        raise NotImplementedError

    def prune(self, model: nn.Module, ctx: PruneContext) -> dict:
        from harness.evaluation.latency import prefill_probe

        latency = {}
        if self.latency_repeats:
            latency["before"] = prefill_probe(model, repeats=self.latency_repeats, seed=ctx.seed)
        report = self.surgery(model, ctx)
        if self.latency_repeats:
            latency["after"] = prefill_probe(model, repeats=self.latency_repeats, seed=ctx.seed)
            latency["speedup"] = latency["before"]["median_s"] / latency["after"]["median_s"]
            report["latency"] = latency
        report["config_after"] = {k: getattr(model.config, k, None) for k in (
            "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "head_dim", "num_local_experts", "num_experts", "num_experts_per_tok")
            if hasattr(model.config, k)}
        return report
