"""The six tag axes of the Awesome-LLMs-Pruning list, spelled as the list spells them.

A method carries its paper's tags exactly as the list badges them (tests/methods/test_list_tags.py
compares every listed method with the list's tags.json); `listed` is the paper link as the list
gives it. A *run's* tags follow what actually ran (`run_tags`): the pattern decides Un- vs
Semi-structured, the recovery decides Retrain and Weight (a Wanda run with LoRA recovery is
Retrain "Efficient-LoRA", Weight "Update"; a ShortGPT run without recovery is "Without" / "Frozen").

VOCABULARY is the values the list uses (its README badges, from tags.json) plus the few values of
the leaderboard's own rows that no paper has: "Baseline" / "None" for the dense row. A typo is an
error at class definition, not a silently new category.
"""

from __future__ import annotations

from dataclasses import dataclass

# The list's own values (tags.json of liyunqianggyn/Awesome-LLMs-Pruning at afcafbee), per axis.
LIST_VOCABULARY: dict[str, tuple[str, ...]] = {
    "type": ("Unstructured", "Semi-structured", "Un/Semi-structured", "Un/Semi-/Structured", "Structured",
             "Structured-Depth", "Structured-Channel+Depth", "Structured-Width+Depth", "Structured-Channel+Head",
             "Structured-Multi Granularity", "Head/Neuron", "Other", "Other-Sparse+Low Rank"),
    "criteria": ("Magnitude", "Wanda", "Hessian", "Hessian-Approximation", "RIA", "Cosine Similarity",
                 "Relative Impact Factor", "Multiple", "Perplexity", "Activation/Perplexity", "Wanda/Hessian",
                 "Magnitude/Hessian/Wanda", "Trainable", "Trainable-Gumbel Softmax", "Policy Learning",
                 "Task Likelihood", "Median based", "Pearson+PCA", "MINLP", "Outlier Scaling", "KL",
                 "Low Rank+Sparse", "Other"),
    "budget": ("Sparsity", "Sparsity-layer", "Sparsity-block", "Sparsity-mix", "Sparsity-global",
               "Sparsity-Global", "Sparsity-KV cache", "Layer Numbers", "Parameter", "Latency", "FLOPs"),
    "data": ("Data free", "Calibration", "Small", "Small-50K", "Small-tasks", "Calibration/Small",
             "Calibration/Samll-50K", "Calibration+Medium 1.8B", "Medium 45B", "Medium-60B", "Medium~50B",
             "Large", "Large-150B+", "Other"),
    "retrain": ("Without", "Efficient", "Efficient-LoRA", "Efficient LoRA", "Efficient Lightweight",
                "Efficient-Continued", "Emulated Update+LoRA", "Extensive", "Extensive/Without", "Scratch",
                "Other"),
    "weights": ("Frozen", "Update", "Update/Frozen", "Other"),
}
# Values of the leaderboard's own rows (the dense baseline), not of any paper.
BOARD_ONLY: dict[str, tuple[str, ...]] = {"type": ("Baseline",), "criteria": ("None",), "budget": ("None",)}
VOCABULARY: dict[str, tuple[str, ...]] = {axis: values + BOARD_ONLY.get(axis, ())
                                          for axis, values in LIST_VOCABULARY.items()}
AXES = tuple(VOCABULARY)
# The list's tags.json names the last axis "weight"; records and tables call it "weights".
LIST_KEYS = {"type": "type", "criteria": "criteria", "budget": "budget", "data": "data", "retrain": "retrain",
             "weights": "weight"}

# What a recovery stage makes of a run's Retrain / Weight tags (harness.recovery names).
RECOVERY_RETRAIN = {"lora": "Efficient-LoRA", "kd": "Efficient", "partial": "Efficient",
                    "replace": "Efficient Lightweight", "qat": "Efficient-Continued",
                    "continued": "Efficient-Continued"}


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


def run_tags(paper: Tags | dict, pattern: str | None, recovery: str | None, updates_weights: bool,
             needs_calibration: bool | None = None, own_training: tuple[str, str] | None = None) -> dict[str, str]:
    """The tags of one run: its method's paper tags, with the axes that depend on what ran replaced.

    Type: an Un/Semi(-/)structured method is "Semi-structured" on an N:M target, "Unstructured" on an
    unstructured one, "Structured" on a structured one (LLM Surgeon's rows/columns).
    Retrain / Weight: no recovery -> "Without" and "Update" only if the method itself rewrites weights
    (SparseGPT's reconstruction), else "Frozen"; a recovery -> its RECOVERY_RETRAIN value and "Update".
    Data: without recovery, what the pruning step used ("Calibration" or "Data free"); a paper's
    retraining data ("Calibration+Medium 1.8B") did not take part.
    own_training: (retrain, data) of a method whose pruning step itself trains (Compresso learns its
    masks jointly with LoRA adapters): without a recovery stage those are the run's Retrain and Data,
    and its Weight is "Update".
    """
    tags = dict(paper.as_dict() if isinstance(paper, Tags) else paper)
    if tags.get("type") in ("Un/Semi-structured", "Un/Semi-/Structured") and pattern:
        tags["type"] = {"nm": "Semi-structured", "unstructured": "Unstructured"}.get(pattern, "Structured")
    if recovery in (None, "none") and own_training is not None:
        tags["retrain"], tags["data"] = own_training
        tags["weights"] = "Update"
    elif recovery in (None, "none"):
        tags["retrain"] = "Without"
        tags["weights"] = "Update" if updates_weights else "Frozen"
        if needs_calibration is not None and tags.get("type") != "Baseline":
            tags["data"] = "Calibration" if needs_calibration else "Data free"
    else:
        tags["retrain"] = RECOVERY_RETRAIN.get(recovery, "Efficient")
        tags["weights"] = "Update"
    return tags


