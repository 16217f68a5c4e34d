"""Dynamic batch loading (Sheared LLaMA, Xia et al. 2024, Sec. 2.2): training batches drawn from
several domains (corpora), with the domain proportions updated from each domain's held-out loss
gap to a reference loss.

Domain          one corpus/split cut into token windows: a training pool and held-out windows from
                documents never trained on (harness.recovery.train's packing and held-out split)
DynamicBatches  the batch source harness.recovery.train.train reads (`batch(step)`): each window's
                domain is drawn from the current proportions, the domain's windows come in a seeded
                order; every `update_every` steps `maybe_update` measures the held-out loss of each
                domain and applies the reference's update (LLM-Shearing dynamic_loading_callback):
                  doremi    w <- softmax(log w + eta * (loss - reference)), then (1 - c) w + c / k
                  constant  w unchanged
                with eta = 1 and c = 1e-4 (DoReMi's smoothing). The paper writes the gap as
                max(loss - reference, 0); the reference code uses the signed gap (`clip_gap`
                chooses). Its state (proportions, cursors, sampler RNG, history) is checkpointed with
                the training step, so a resumed run draws the same batches.
With one domain every batch comes from it and nothing updates: plain continued pretraining
(`single_domain` in the report says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

UPDATE_TYPES = ("doremi", "constant")
ETA = 1.0      # reference: eta = 1
SMOOTH = 1e-4  # reference: c = 1e-4, following DoReMi


@dataclass
class Domain:
    name: str                  # "<corpus>/<split>"
    pool: torch.Tensor         # [n, seq_len] int64 training windows
    heldout: torch.Tensor      # [h, seq_len] int64 windows of held-out documents
    reference_loss: float | None = None
    info: dict = field(default_factory=dict)


def parse_domains(spec) -> list[tuple[str, str]]:
    """[(corpus, split)] from a list of "corpus/split" strings or {corpus, split} mappings."""
    out = []
    for item in spec or []:
        if isinstance(item, str):
            corpus, _, split = item.partition("/")
            out.append((corpus, split or "train"))
        else:
            out.append((str(item["corpus"]), str(item.get("split", "train"))))
    if len(set(out)) != len(out):
        raise ValueError(f"domains repeat: {out}")
    return out


def load_domain(tokenizer, corpus: str, split: str, seq_len: int, heldout_docs: int, heldout_windows: int,
                data_dir: Path | None, max_docs: int | None = None) -> Domain:
    """Windows of one local corpus: the last `heldout_docs` documents give the held-out windows."""
    from harness.data import load_rows
    from harness.hashing import sha256_tokens
    from harness.recovery.train import _pack

    rows = load_rows(corpus, split, data_dir)
    docs = rows.rows[:max_docs] if max_docs is not None else rows.rows
    if len(docs) <= heldout_docs:
        raise ValueError(f"corpus {corpus}/{split} has {len(docs)} documents, not more than heldout_docs")
    heldout = _pack(docs[-heldout_docs:], tokenizer, seq_len, heldout_windows)[:heldout_windows]
    if len(heldout) < heldout_windows:
        raise ValueError(f"{corpus}/{split}: held-out documents give {len(heldout)} windows of {seq_len} tokens, "
                         f"fewer than {heldout_windows}")
    pool = _pack(docs[:-heldout_docs], tokenizer, seq_len)
    info = {"source": rows.source, "data_sha256": rows.sha256, "variant": rows.variant,
            "train_pool_windows": len(pool), "heldout_windows": len(heldout),
            "heldout_tokens_sha256": sha256_tokens(heldout)}
    return Domain(f"{corpus}/{split}", pool, heldout, None, info)


def update_proportions(weights: torch.Tensor, losses: torch.Tensor, reference: torch.Tensor, update_type: str,
                       clip_gap: bool = False) -> torch.Tensor:
    """The reference's proportion update ([k] float64 each)."""
    if update_type == "constant":
        return weights.clone()
    if update_type != "doremi":
        raise ValueError(f"update_type must be one of {UPDATE_TYPES}, got {update_type!r}")
    gap = losses - reference
    if clip_gap:
        gap = gap.clamp(min=0.0)
    alpha = torch.softmax(torch.log(weights) + ETA * gap, dim=0)
    new = (1 - SMOOTH) * alpha + SMOOTH / len(weights)
    return new / new.sum()


class DynamicBatches:
    """Per-step batches over `domains` with proportions updated from held-out loss gaps."""

    def __init__(self, domains: list[Domain], proportion: list[float] | None, windows_per_step: int,
                 update_every: int, update_type: str = "doremi", seed: int = 0, clip_gap: bool = False):
        if not domains:
            raise ValueError("dynamic batch loading needs at least one domain")
        if update_type not in UPDATE_TYPES:
            raise ValueError(f"update_type must be one of {UPDATE_TYPES}, got {update_type!r}")
        k = len(domains)
        p = torch.tensor(proportion if proportion is not None else [1.0 / k] * k, dtype=torch.float64)
        if p.numel() != k or (p <= 0).any():
            raise ValueError(f"proportion needs {k} positive values, got {proportion}")
        if len(domains) > 1 and any(d.reference_loss is None for d in domains):
            raise ValueError("every domain needs a reference loss when there are several")
        self.domains = domains
        self.update_every = int(update_every)
        self.update_type = update_type
        self.clip_gap = clip_gap
        self.windows_per_step = int(windows_per_step)
        self.weights = p / p.sum()                                           # [k] float64
        self.initial = self.weights.tolist()
        self.gen = torch.Generator().manual_seed(int(seed))
        orders = torch.Generator().manual_seed(int(seed) + 1)
        self.orders = [torch.randperm(len(d.pool), generator=orders) for d in domains]
        self.cursors = [0] * k
        self.step = 0
        self.history: list[dict] = []

    @property
    def single_domain(self) -> bool:
        return len(self.domains) == 1

    def batch(self, step: int) -> torch.Tensor:
        """[windows_per_step, seq_len]: each window's domain drawn from the current proportions."""
        self.step = int(step)
        n = self.windows_per_step
        which = (torch.zeros(n, dtype=torch.long) if self.single_domain
                 else torch.multinomial(self.weights, n, replacement=True, generator=self.gen))
        rows = []
        for j in which.tolist():
            d, order = self.domains[j], self.orders[j]
            rows.append(d.pool[order[self.cursors[j] % len(order)]])          # epochs repeat the order
            self.cursors[j] += 1
        return torch.stack(rows)

    def maybe_update(self, heldout_loss: Callable[[torch.Tensor], float]) -> None:
        """After step `self.step`: every `update_every` steps, held-out losses -> new proportions."""
        done = self.step + 1
        if self.single_domain or not self.update_every or done % self.update_every:
            return
        losses = torch.tensor([heldout_loss(d.heldout) for d in self.domains], dtype=torch.float64)
        reference = torch.tensor([d.reference_loss for d in self.domains], dtype=torch.float64)
        self.weights = update_proportions(self.weights, losses, reference, self.update_type, self.clip_gap)
        self.history.append({"step": done, "loss": [round(float(x), 5) for x in losses],
                             "proportion": [round(float(x), 5) for x in self.weights]})

    # -- checkpointed with the training step (harness.recovery.train extra_state) ---------------------
    def state_dict(self) -> dict:
        return {"weights": self.weights.clone(), "cursors": torch.tensor(self.cursors, dtype=torch.long),
                "gen": self.gen.get_state(), "history": [
                    {"step": h["step"], "loss": torch.tensor(h["loss"], dtype=torch.float64),
                     "proportion": torch.tensor(h["proportion"], dtype=torch.float64)} for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.weights = state["weights"].to(torch.float64)
        self.cursors = [int(c) for c in state["cursors"]]
        self.gen.set_state(state["gen"])
        self.history = [{"step": int(h["step"]), "loss": [float(x) for x in h["loss"]],
                         "proportion": [float(x) for x in h["proportion"]]} for h in state["history"]]

    def describe(self) -> dict:
        used = [min(c, len(o)) for c, o in zip(self.cursors, self.orders)]
        out = {"domains": [d.name for d in self.domains], "single_domain": self.single_domain,
               "update_type": self.update_type, "update_every": self.update_every, "clip_gap": self.clip_gap,
               "proportion_initial": [round(x, 5) for x in self.initial],
               "proportion_final": [round(float(x), 5) for x in self.weights],
               "reference_loss": [d.reference_loss for d in self.domains],
               "windows_drawn": list(self.cursors),
               "epochs": [c / len(o) if len(o) else math.nan for c, o in zip(self.cursors, self.orders)],
               "distinct_windows_drawn": used, "updates": self.history,
               "domain_info": {d.name: d.info for d in self.domains}}
        if self.single_domain:
            out["note"] = ("one domain: every batch comes from it and no proportion is updated, so dynamic batch "
                           "loading reduces to plain continued pretraining")
        return out


def heldout_losses(domains: list[Domain], heldout_loss: Callable[[torch.Tensor], float]) -> dict[str, float]:
    return {d.name: heldout_loss(d.heldout) for d in domains}
