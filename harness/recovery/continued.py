"""Continued pretraining with dynamic batch loading (Sheared LLaMA's second stage).

Every parameter trains with the causal-LM loss on batches from the configured domains
(harness.recovery.domains.DynamicBatches): each domain's proportion is updated every `update_every`
steps from its held-out loss gap to its reference loss. `domains` defaults to the budget's own
corpus/split: one domain, plain continued pretraining (the report's `dynamic_loading.note` says so).
Reference losses: `reference_loss: dense` measures each domain's held-out loss with the unpruned
model (reloaded from the run's model source; the reference predicts them with a scaling law for
the target size), or a list of numbers. The loop, budget, checkpoints and exact resume are
harness.recovery.train's; the batch source's state is checkpointed with the step.
"""

from __future__ import annotations

from dataclasses import replace

from harness.errors import ConfigError
from harness.recovery.train import lm_loss, set_eval_mode, set_train_mode, train

OWN_KEYS = {"domains", "proportion", "update_every", "update_type", "clip_gap", "reference_loss", "ppl_before"}


def _domains(params: dict) -> list[tuple[str, str]]:
    from harness.recovery.domains import parse_domains

    spec = params.get("domains")
    if not spec:
        return [(str(params.get("corpus", "c4")), str(params.get("split", "train")))]
    return parse_domains(spec)


def check(params: dict) -> None:
    from harness.recovery.domains import UPDATE_TYPES

    try:
        domains = _domains(params)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"recovery continued: bad domains: {exc}") from None
    if params.get("update_type", "doremi") not in UPDATE_TYPES:
        raise ConfigError(f"recovery continued: update_type must be one of {', '.join(UPDATE_TYPES)}")
    prop = params.get("proportion")
    if prop is not None and (len(prop) != len(domains) or any(float(p) <= 0 for p in prop)):
        raise ConfigError(f"recovery continued: proportion needs {len(domains)} positive values")
    ref = params.get("reference_loss", "dense")
    if ref != "dense" and (not isinstance(ref, (list, tuple)) or len(ref) != len(domains)):
        raise ConfigError(f"recovery continued: reference_loss is 'dense' or {len(domains)} numbers")


def _reference_losses(params: dict, domains, ctx) -> list[float | None]:
    ref = params.get("reference_loss", "dense")
    if ref != "dense":
        return [float(r) for r in ref]
    if len(domains) == 1:
        return [None]     # one domain: nothing to balance, the reference is not used
    teacher, _, _ = ctx.load_teacher()   # the unpruned model, from the run's model source
    try:
        return [lm_loss(teacher, d.heldout, ctx.device) for d in domains]
    finally:
        del teacher


def recover(model, tokenizer, params: dict, ctx) -> dict:
    check(params)
    from harness.recovery.budget import check_not_eval_text, parse_budget
    from harness.recovery.domains import DynamicBatches, load_domain
    from harness.recovery.qat import _ppl

    b = getattr(ctx, "budget", None) or parse_budget(params, OWN_KEYS, "continued")
    pairs = _domains(params)
    for corpus, split in pairs:     # never train on evaluation text, whichever domain
        check_not_eval_text(replace(b, corpus=corpus, split=split), ctx.eval_texts, "continued")
    domains = [load_domain(tokenizer, c, s, b.seq_len, b.heldout_docs, b.heldout_windows, ctx.data_dir, b.max_docs)
               for c, s in pairs]
    for d, r in zip(domains, _reference_losses(params, domains, ctx)):
        d.reference_loss = r
    source = DynamicBatches(domains, params.get("proportion"), b.windows_per_step, int(params.get("update_every", 50)),
                            params.get("update_type", "doremi"), seed=b.seed, clip_gap=bool(params.get("clip_gap")))
    ppl_before = _ppl(model, tokenizer, ctx) if params.get("ppl_before", True) else None
    before = {d.name: lm_loss(model, d.heldout, ctx.device) for d in domains}
    trainable = dict(model.named_parameters())
    for p in trainable.values():
        p.requires_grad_(True)
    import torch

    torch.manual_seed(b.seed)
    set_train_mode(model, b)

    def loss_fn(x):  # x: [batch, seq_len]
        return model(input_ids=x, labels=x).loss

    def after_step(_done: int):
        source.maybe_update(lambda w: lm_loss(model, w, ctx.device))

    stats = train(trainable, loss_fn, source, b, ctx.checkpoint_dir, "continued", after_step=after_step,
                  device=ctx.device, extra_state=source)
    set_eval_mode(model, b)
    after = {d.name: lm_loss(model, d.heldout, ctx.device) for d in domains}
    return {"type": "continued", "budget": b.describe(), "dynamic_loading": source.describe(),
            "ppl_before": ppl_before,
            "heldout_loss_before": sum(before.values()) / len(before),
            "heldout_loss_after": sum(after.values()) / len(after),
            "heldout_loss_before_per_domain": before, "heldout_loss_after_per_domain": after,
            "checkpoint_dir": str(ctx.checkpoint_dir) if ctx.checkpoint_dir else None} | stats
