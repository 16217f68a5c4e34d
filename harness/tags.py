"""The six tag axes of the Awesome-LLMs-Pruning list, as a fixed vocabulary plus a free qualifier.

The leaderboard groups and filters on these; a typo is an error at class definition, not a
silently new category.
"""

from __future__ import annotations

from dataclasses import dataclass

VOCABULARY: dict[str, tuple[str, ...]] = {
    "type": ("Unstructured", "Semi-structured", "Structured", "Other", "Baseline"),
    "criteria": ("None", "Weight", "Activation", "Weight+Activation", "Hessian", "Gradient",
                 "Similarity", "Learnable", "Attention", "Position", "Loss", "Random"),
    "budget": ("None", "Weights", "Blocks", "Sublayers", "Width", "KV cache"),
    "data": ("Data-free", "Calibration", "Training data"),
    "retrain": ("Without retraining", "With retraining"),
    "weights": ("Frozen weights", "Weight update"),
}


@dataclass(frozen=True)
class Tags:
    type: str
    criteria: str
    budget: str
    data: str
    retrain: str
    weights: str
    qualifier: str = ""   # free text, e.g. "N:M capable", "per-output comparison group"

    def __post_init__(self):
        for axis, allowed in VOCABULARY.items():
            value = getattr(self, axis)
            if value not in allowed:
                raise ValueError(f"tag {axis}={value!r} not in vocabulary {allowed}")

    def as_dict(self) -> dict[str, str]:
        return {axis: getattr(self, axis) for axis in (*VOCABULARY, "qualifier")}
