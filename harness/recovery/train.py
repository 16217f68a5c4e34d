"""Shared recovery machinery: the training corpus, masks, and one resumable loop.

Every recovery type (lora, partial, kd, replace) is "choose trainable parameters + a loss"; this
module does the rest once (the budget it trains under is parsed in harness.recovery.budget): token windows from a training corpus (never evaluation text), AdamW with
a transformers schedule, gradient accumulation and clipping, progress (bar, log lines, live W&B history: harness.progress), periodic checkpoints
(safetensors for the trainable tensors, torch state for optimizer/scheduler/RNG) and exact resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.recovery.budget import Budget, check_not_eval_text, parse_budget

log = logging.getLogger(__name__)


class Preempted(RuntimeError):
    """Training stopped at `stop_after` (simulated preemption); the checkpoint allows resuming."""


# ---------------------------------------------------------------------------------------------
# data

@dataclass
class Corpus:
    train: torch.Tensor          # [steps * batch_size * grad_accum, seq_len] int64, in training order
    heldout: torch.Tensor        # [heldout_windows, seq_len] int64, from documents never trained on
    info: dict


def _rows(b: Budget, data_dir: Path | None) -> tuple[list[str], dict]:
    from harness.data import CORPORA, load_rows

    if b.corpus in CORPORA:
        rows = load_rows(b.corpus, b.split, data_dir)
        return rows.rows, {"source": rows.source, "data_sha256": rows.sha256, "variant": rows.variant}
    import datasets

    _, path, *name = b.corpus.split(":")
    split = b.split if b.max_docs is None else f"{b.split}[:{b.max_docs}]"
    ds = datasets.load_dataset(path, name[0] if name else None, split=split)
    return list(ds[b.text_field]), {"source": f"hub:{path}", "data_sha256": None, "variant": None}


def _pack(docs: list[str], tokenizer, seq_len: int, limit: int | None = None) -> torch.Tensor:
    """Documents tokenized, joined with EOS, cut into [n, seq_len] windows (remainder dropped)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for doc in docs:
        if not doc.strip():
            continue
        ids.extend(tokenizer(doc)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if limit is not None and len(ids) >= limit * seq_len:
            break
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.int64).view(n, seq_len)


def build_corpus(tokenizer, b: Budget, data_dir: Path | None) -> Corpus:
    from harness.hashing import sha256_tokens

    rows, info = _rows(b, data_dir)
    if b.max_docs is not None:
        rows = rows[: b.max_docs]
    if len(rows) <= b.heldout_docs:
        raise ValueError(f"corpus {b.corpus}/{b.split} has {len(rows)} documents, not more than heldout_docs")
    train_docs, heldout_docs = rows[: -b.heldout_docs], rows[-b.heldout_docs:]
    heldout = _pack(heldout_docs, tokenizer, b.seq_len, b.heldout_windows)[: b.heldout_windows]
    if len(heldout) < b.heldout_windows:
        raise ValueError(f"held-out documents give {len(heldout)} windows of {b.seq_len} tokens, "
                         f"fewer than heldout_windows={b.heldout_windows}")
    pool = _pack(train_docs, tokenizer, b.seq_len)
    need = b.steps * b.windows_per_step
    gen = torch.Generator().manual_seed(b.seed)
    order = torch.cat([torch.randperm(len(pool), generator=gen) for _ in range(math.ceil(need / len(pool)))])
    train = pool[order[:need]]
    info |= {"corpus": b.corpus, "split": b.split, "train_pool_windows": len(pool),
             "epochs": need / len(pool), "train_tokens_sha256": sha256_tokens(train),
             "heldout_tokens_sha256": sha256_tokens(heldout), "heldout_docs": b.heldout_docs}
    return Corpus(train, heldout, info)


# ---------------------------------------------------------------------------------------------
# sparsity masks

@torch.no_grad()
def capture_masks(model: nn.Module, adapter) -> dict[str, torch.Tensor]:
    """Zero pattern of every block linear that has zeros: {parameter name: bool mask (True = keep)}."""
    names = {id(p): n for n, p in model.named_parameters()}
    masks = {}
    for block in adapter.blocks(model):
        for lin in adapter.linears(block).values():
            w = lin.weight
            if bool((w == 0).any()) and id(w) in names:
                masks[names[id(w)]] = w != 0
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def block_sparsity(model: nn.Module, adapter) -> float:
    from harness.blocks.measure import measure_sparsity

    return measure_sparsity(model, adapter)["sparsity_blocks"]


# ---------------------------------------------------------------------------------------------
# evaluation of the training objective

@torch.no_grad()
def lm_loss(model: nn.Module, windows: torch.Tensor, device: str, batch_size: int = 4) -> float:
    """Mean next-token cross-entropy over held-out windows (token-weighted; all windows are full)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size].to(device)
        loss = model(input_ids=x, labels=x).loss
        n = x.numel() - x.shape[0]
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------------------
# the loop

def _fingerprint(b: Budget, names: list[str], tag: str) -> str:
    spec = {k: v for k, v in asdict(b).items() if k not in ("stop_after", "checkpoint_every", "keep_checkpoints")}
    blob = json.dumps({"budget": spec, "params": names, "tag": tag}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save(ckpt: Path, params: dict[str, nn.Parameter], opt, sched, step: int, losses: list[float],
          fingerprint: str, extra_state=None) -> None:
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().contiguous().cpu() for n, p in params.items()}, str(tmp / "trainable.safetensors"))
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
             "losses": torch.tensor(losses, dtype=torch.float64), "rng_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    if extra_state is not None:
        state["extra"] = extra_state.state_dict()
    torch.save(state, tmp / "state.pt")
    (tmp / "fingerprint.txt").write_text(fingerprint)
    if ckpt.exists():  # swap in atomically enough: a kill between these leaves either copy
        old = ckpt.with_name(ckpt.name + ".old")
        ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old)
    else:
        tmp.rename(ckpt)


def _load(ckpt: Path, params: dict[str, nn.Parameter], opt, sched, extra_state=None) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt / "trainable.safetensors"))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n].to(p.device, p.dtype))
    # Our own file (optimizer/scheduler/RNG state); weights_only keeps torch.load from running code.
    state = torch.load(ckpt / "state.pt", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    if extra_state is not None:
        extra_state.load_state_dict(state["extra"])
    return int(state["step"]), [float(x) for x in state["losses"]]


def train(params: dict[str, nn.Parameter], loss_fn: Callable[[torch.Tensor], torch.Tensor],
          windows, b: Budget, checkpoint_dir: Path | None, tag: str,
          after_step: Callable[[int], None] | None = None, device: str = "cpu",
          groups: Callable[[str], dict] | None = None, extra_state=None,
          before_step: Callable[[int], None] | None = None) -> dict:
    """AdamW over `params` for b.steps steps on `windows` ([steps*batch*accum, seq_len]), or on
    `windows.batch(step)` ([batch*accum, seq_len]) for a source that decides each step's batch
    (harness.recovery.domains.DynamicBatches).

    groups: parameter name -> optimizer-group options ({"lr": ..., "maximize": True}); parameters
    with equal options share a group, the schedule scales every group's lr. extra_state: an object
    with state_dict() / load_state_dict() (tensors and plain values) checkpointed with the step.
    `after_step(done)` runs after each optimizer step (done: steps completed, 1-based), before the
    loss is logged and any checkpoint is written (masks re-applied there are in the checkpoint).
    before_step(step): called with the 0-based step index before each step (a resumed run calls it
    from the resumed step on), for losses that follow a schedule of their own.
    Resumes from `checkpoint_dir/tag` when a checkpoint with the same fingerprint exists.
    Raises Preempted after step b.stop_after (the checkpoint is written first)."""
    from transformers import get_scheduler

    from harness.progress import Progress

    names = sorted(params)
    trainable = [params[n] for n in names]
    opt = torch.optim.AdamW(_param_groups(params, names, groups, b), lr=b.lr, weight_decay=b.weight_decay)
    sched = get_scheduler(b.schedule, opt, num_warmup_steps=b.warmup_steps, num_training_steps=b.steps)
    fingerprint = _fingerprint(b, names, tag if groups is None else f"{tag}|{_group_spec(names, groups)}")
    ckpt = checkpoint_dir / tag if checkpoint_dir is not None else None
    start, losses, resumed_from = _resume(ckpt, fingerprint, params, opt, sched, tag, extra_state)
    bar = Progress(f"recovery {tag}", total=b.steps, unit="step", kind="recovery_step", initial=start).start()
    try:
        for step in range(start, b.steps):
            if before_step is not None:
                before_step(step)
            batch = (windows.batch(step) if hasattr(windows, "batch")
                     else windows[step * b.windows_per_step:(step + 1) * b.windows_per_step])
            total = _optimizer_step(batch, loss_fn, trainable, opt, sched, b, device)
            done = step + 1
            if after_step is not None:
                after_step(done)
            losses.append(total)
            bar.advance(loss=total, lr=float(sched.get_last_lr()[0]))
            stop = b.stop_after is not None and done == b.stop_after and done < b.steps
            if ckpt is not None and (stop or (b.checkpoint_every and done % b.checkpoint_every == 0 and done < b.steps)):
                _save(ckpt, params, opt, sched, done, losses, fingerprint, extra_state)
            if stop:
                raise Preempted(f"recovery {tag}: stopped after step {done} of {b.steps} (stop_after); "
                                f"checkpoint {ckpt}")
    finally:
        bar.close()
    if ckpt is not None and ckpt.exists() and not b.keep_checkpoints:
        shutil.rmtree(ckpt)
        if not any(checkpoint_dir.iterdir()):  # the run's folder too, once no tag is left
            checkpoint_dir.rmdir()
    elif ckpt is not None and b.keep_checkpoints:
        _save(ckpt, params, opt, sched, b.steps, losses, fingerprint, extra_state)
    return _train_summary(b, losses, resumed_from, trainable)


def _param_groups(params: dict[str, nn.Parameter], names: list[str], groups, b: Budget) -> list[dict]:
    """One optimizer group per distinct options dict (in name order), or all in one group."""
    if groups is None:
        return [{"params": [params[n] for n in names]}]
    out: dict[str, dict] = {}
    for n in names:
        opts = dict(groups(n))
        key = json.dumps(opts, sort_keys=True)
        out.setdefault(key, {**opts, "params": []})["params"].append(params[n])
    return list(out.values())


def _group_spec(names: list[str], groups) -> str:
    """The group options of every parameter, for the checkpoint fingerprint."""
    blob = json.dumps({n: groups(n) for n in names}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resume(ckpt: Path | None, fingerprint: str, params: dict[str, nn.Parameter], opt, sched,
            tag: str, extra_state=None) -> tuple[int, list[float], int | None]:
    """(first step, losses so far, step resumed from or None): a checkpoint of another budget is ignored."""
    if ckpt is None or not (ckpt / "fingerprint.txt").is_file():
        return 0, [], None
    if (ckpt / "fingerprint.txt").read_text() != fingerprint:
        log.warning("recovery %s: checkpoint %s is from another budget; starting over", tag, ckpt)
        return 0, [], None
    start, losses = _load(ckpt, params, opt, sched, extra_state)
    log.info("recovery %s: resumed from step %d (%s)", tag, start, ckpt)
    return start, losses, start


def _optimizer_step(windows: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                    trainable: list[nn.Parameter], opt, sched, b: Budget, device: str) -> float:
    """One optimizer step over b.grad_accum micro-batches of `windows` ([batch*accum, seq_len]);
    returns the step's loss (the sum of the scaled micro-batch losses)."""
    total = 0.0
    for micro in range(b.grad_accum):
        x = windows[micro * b.batch_size:(micro + 1) * b.batch_size].to(device)     # [batch, seq_len]
        with torch.autocast(torch.device(device).type, dtype=getattr(torch, b.autocast or "float32"),
                            enabled=b.autocast is not None):
            loss = loss_fn(x) / b.grad_accum
        loss.backward()
        total += float(loss.detach())
    if b.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trainable, b.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return total


def _train_summary(b: Budget, losses: list[float], resumed_from: int | None, trainable: list[nn.Parameter]) -> dict:
    k = max(1, min(8, len(losses) // 4))
    return {"steps": b.steps, "resumed_from_step": resumed_from, "trainable_params": sum(p.numel() for p in trainable),
            "train_loss_first": sum(losses[:k]) / k, "train_loss_last": sum(losses[-k:]) / k,
            "train_loss_curve": [round(x, 5) for x in losses]}


def last_blocks(n_blocks: int, k: int) -> list[int]:
    """Indices of the last k of n_blocks blocks (all of them when k >= n_blocks)."""
    return list(range(max(0, n_blocks - k), n_blocks))


def block_prefixes(adapter, indices) -> tuple[str, ...]:
    """Parameter-name prefixes of the given blocks (with the trailing '.', so block 1 never matches 10)."""
    return tuple(f"{adapter.block_prefix(i)}." for i in indices)


def set_train_mode(model: nn.Module, b: Budget) -> None:
    model.train()
    model.config.use_cache = False
    if b.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_eval_mode(model: nn.Module, b: Budget) -> None:
    """Back to inference after training: no checkpointing, eval mode, every parameter frozen."""
    if b.gradient_checkpointing and getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# what every recovery type does around its own training

@dataclass
class Session:
    budget: Budget
    corpus: Corpus
    masks: dict
    report: dict
    device: str


def start(model: nn.Module, tokenizer, params: dict, ctx, own_keys: set[str], name: str) -> Session:
    """Parse and check the budget, build the corpus, capture masks, measure the starting point."""
    b = getattr(ctx, "budget", None) or parse_budget(params, own_keys, name)   # validation parsed it once
    check_not_eval_text(b, ctx.eval_texts, name)
    corpus = build_corpus(tokenizer, b, ctx.data_dir)
    masks = capture_masks(model, ctx.adapter) if b.keep_sparsity else {}
    report = {"type": name, "budget": b.describe(), "corpus": corpus.info,
              "sparsity_blocks_before": block_sparsity(model, ctx.adapter),
              "heldout_loss_before": lm_loss(model, corpus.heldout, ctx.device),
              "checkpoint_dir": str(ctx.checkpoint_dir) if ctx.checkpoint_dir else None}
    torch.manual_seed(b.seed)
    return Session(b, corpus, masks, report, ctx.device)


def finish(model: nn.Module, s: Session, ctx) -> dict:
    """Re-apply the masks, measure the end point; returns the report for record['recovery']."""
    apply_masks(model, s.masks)
    s.report |= {"masked_tensors": len(s.masks),
                 "sparsity_blocks_after": block_sparsity(model, ctx.adapter),
                 "heldout_loss_after": lm_loss(model, s.corpus.heldout, s.device)}
    return s.report
