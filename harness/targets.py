"""Pruning targets, shared by all methods (conf/target/*.yaml).

pattern      meaning of the numbers
unstructured ratio of block-linear weights set to zero
nm           at most n non-zeros in every m consecutive inputs (ratio = 1 - n/m)
blocks       ratio of decoder blocks removed (or `count` blocks)
sublayers    `count` attention or MLP sublayers removed (`sublayer: attn|mlp`)
width        ratio of parameters removed by shrinking heads / channels
rows_cols    ratio of block-linear weights zeroed as whole rows and columns of each matrix
experts      ratio of routed experts removed in every mixture-of-experts layer
flops        ratio of an encoder's FLOPs removed (attention heads + FFN neurons, harness.encoders)
ternary      block-linear weights in {-s, 0, +s} per tensor (`bits`: log2(3) ~ 1.58 per weight asked
             for; the zeros are whatever share the rounding gives, measured, not set by `ratio`)
shape        a named target architecture (`shape`: layers, heads, kv_heads, intermediate, hidden of a
             LLaMA-layout model); `ratio` is unused, the method records the parameter count the
             shape implies for the pruned model's config next to the measured one
none         nothing pruned (the dense baseline)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import TargetError  # noqa: F401  (re-exported)

PATTERNS = ("none", "unstructured", "nm", "blocks", "sublayers", "width", "rows_cols", "experts", "flops",
            "ternary", "shape")
SHAPE_KEYS = ("layers", "heads", "kv_heads", "intermediate", "hidden")
TERNARY_BITS = math.log2(3)   # bits of one three-valued weight, before the scale overhead
SCOPES = ("block_linears",)


def pattern_mismatch(component, pattern: str) -> str | None:
    """Why a method or KV policy (anything with `name` and `patterns`) cannot produce a target
    pattern, or None. Validation raises it, a sweep lists the grid cell as invalid and
    Method.check raises it as TargetError: one rule, one message."""
    if pattern in component.patterns:
        return None
    return (f"method {component.name} cannot produce pattern {pattern!r} "
            f"(supports: {', '.join(sorted(component.patterns))})")


def allocator_mismatch(allocator: str, pattern: str) -> str | None:
    """Why an allocator cannot serve a target pattern, or None (raised and listed like pattern_mismatch)."""
    if allocator != "uniform" and pattern != "unstructured":
        return f"allocator {allocator} applies to unstructured targets only"
    return None



@dataclass(frozen=True)
class Target:
    name: str
    pattern: str
    ratio: float = 0.0
    n: int | None = None
    m: int | None = None
    count: int | None = None
    sublayer: str | None = None
    scope: str = "block_linears"
    bits: float | None = None       # ternary: bits per weight asked for (levels only, the scales apart)
    shape: tuple | None = None      # shape: ((key, int), ...) over SHAPE_KEYS (a YAML mapping is accepted)

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise TargetError(f"unknown pattern {self.pattern!r}; one of {', '.join(PATTERNS)}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise TargetError(f"target ratio must be in [0, 1), got {self.ratio}")
        if self.scope not in SCOPES:
            raise TargetError(f"unknown scope {self.scope!r}; one of {', '.join(SCOPES)}")
        if self.pattern == "nm":
            if not (isinstance(self.n, int) and isinstance(self.m, int) and 0 < self.m):
                raise TargetError("pattern nm needs integer n and m")
            if self.n > self.m:
                raise TargetError(f"N:M target needs N <= M, got {self.n}:{self.m}")
            if abs(self.ratio - (1 - self.n / self.m)) > 1e-9:
                raise TargetError(f"nm target ratio {self.ratio} != 1 - {self.n}/{self.m}")
        if self.pattern == "sublayers" and self.sublayer not in ("attn", "mlp"):
            raise TargetError("pattern sublayers needs sublayer: attn or mlp")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise TargetError(f"target count must be a positive integer, got {self.count!r}")
        if self.pattern == "sublayers" and self.count is None:
            raise TargetError("pattern sublayers needs count")
        if self.pattern == "blocks" and (self.count is None) == (not self.ratio):
            raise TargetError("pattern blocks needs exactly one of ratio > 0 or count")
        if self.pattern == "ternary" and (self.bits is None or abs(float(self.bits) - TERNARY_BITS) > 0.01):
            raise TargetError(f"pattern ternary needs bits: 1.58 (log2 3), got {self.bits!r}")
        if self.pattern != "ternary" and self.bits is not None:
            raise TargetError(f"only pattern ternary takes bits (got bits={self.bits} with {self.pattern})")
        self._check_shape()
        if self.pattern in ("width", "rows_cols", "experts", "flops") and not self.ratio:
            raise TargetError(f"pattern {self.pattern} needs ratio > 0 (fraction removed)")

    def _check_shape(self) -> None:
        if self.pattern != "shape":
            if self.shape is not None:
                raise TargetError(f"only pattern shape takes shape (got shape with {self.pattern})")
            return
        got = dict(self.shape or {})
        if set(got) != set(SHAPE_KEYS):
            raise TargetError(f"pattern shape needs shape with exactly {', '.join(SHAPE_KEYS)}; got {sorted(got)}")
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in got.values()):
            raise TargetError(f"shape widths must be positive integers, got {got}")
        if got["heads"] % got["kv_heads"] or got["hidden"] % got["heads"]:
            raise TargetError(f"shape needs heads a multiple of kv_heads and hidden a multiple of heads, got {got}")
        if self.ratio:
            raise TargetError("pattern shape takes no ratio (the shape fixes the size)")
        # frozen: a hashable, ordered copy of the mapping
        object.__setattr__(self, "shape", tuple((k, int(got[k])) for k in SHAPE_KEYS))

    @property
    def shape_dict(self) -> dict[str, int] | None:
        return dict(self.shape) if self.shape is not None else None

    @classmethod
    def from_config(cls, cfg: dict) -> "Target":
        known = {f for f in cls.__dataclass_fields__}
        extra = set(cfg) - known
        if extra:
            raise TargetError(f"unknown target keys {sorted(extra)}; known: {sorted(known)}")
        return cls(**cfg)

    @property
    def is_nm(self) -> bool:
        return self.pattern == "nm"

    def describe(self) -> dict:
        out = {"name": self.name, "pattern": self.pattern, "ratio": self.ratio, "n": self.n, "m": self.m,
               "count": self.count, "sublayer": self.sublayer, "scope": self.scope}
        if self.bits is not None:   # only ternary targets carry it: every other record stays as it was
            out["bits"] = self.bits
        if self.shape is not None:  # only shape targets carry it
            out["shape"] = self.shape_dict
        return out
