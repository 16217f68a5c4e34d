"""Quantisation-aware training (BitNet b1.58's training, on the recovery axis).

Every parameter trains with the causal-LM loss (the paper trains the whole model); each quantised
block linear (harness.quant: the model config's QUANT_KEY) trains its latent full-precision weight
through the ternary straight-through estimator, its input through the 8-bit per-token STE hook, and
is re-ternarised when training ends. The latent weights start from the weights the method saw before
ternarising (same process), so a pre-trained model is fine-tuned rather than restarted from its
rounded copy. On a model with no quantised linear (method=dense) this is plain full-precision
training of every parameter under the same budget: the full-precision arm of suite=bitnet_scratch.
The loop, budget, checkpoints and resume are harness.recovery.train's. Pruning masks do not apply:
the ternary zeros move while training (keep_sparsity must be false). A method that prunes while the
model trains (methods/gmp.py: gradual magnitude pruning, the sparse scaling-law suite) hands a
callback (`Method.training_hook`) that runs after every optimizer step; its report goes under
`pruning` in the recovery section.
"""

from __future__ import annotations

from harness.errors import ConfigError
from harness.recovery.train import finish, set_eval_mode, set_train_mode, start, train

OWN_KEYS = {"ppl_before"}


def check(params: dict) -> None:
    if params.get("keep_sparsity", True):
        raise ConfigError("recovery qat: keep_sparsity must be false (ternary zeros move while training)")


def _ppl(model, tokenizer, ctx) -> dict | None:
    """WikiText-2 (and the run's other ppl datasets) under the run's own ppl section, or None."""
    section = dict(getattr(ctx, "evals", {}) or {}).get("ppl")
    if not section:
        return None
    from harness.evaluation import get_evaluator
    from harness.evaluation.context import EvalContext

    ectx = EvalContext(device=ctx.device, data_dir=ctx.data_dir, run_dir=None, run_id=ctx.run_id,
                       seed=ctx.seed, threads=None, kv=None, cache_dir=ctx.prune.cache_dir)
    out = get_evaluator("ppl")(model, tokenizer, section, ectx)
    return {name: r["value"] for name, r in out.values.items()}


def recover(model, tokenizer, params: dict, ctx) -> dict:
    check(params)
    from harness.quant import begin_qat, end_qat

    ppl_before = _ppl(model, tokenizer, ctx) if params.get("ppl_before", True) else None
    s = start(model, tokenizer, params, ctx, OWN_KEYS, "qat")
    names = begin_qat(model)       # latent weights + STE parametrizations (none on a dense model)
    trainable = {n: p for n, p in model.named_parameters()}
    for p in trainable.values():
        p.requires_grad_(True)
    set_train_mode(model, s.budget)
    method = getattr(ctx, "method", None)
    hook = method.training_hook(model, ctx, s.budget.steps) if method is not None else None

    def loss_fn(x):  # x: [batch, seq_len]
        return model(input_ids=x, labels=x).loss

    try:
        stats = train(trainable, loss_fn, s.corpus.train, s.budget, ctx.checkpoint_dir, "qat", after_step=hook,
                      device=ctx.device)
    finally:
        end_qat(model, names)      # re-ternarised: the stored weights are s * W~ again
    set_eval_mode(model, s.budget)
    # after training: the record's metrics.ppl (the evaluate stage, same section)
    s.report |= stats | {"qat": {"quantised_linears": len(names), "ppl_before": ppl_before}}
    if hook is not None:
        s.report["pruning"] = hook.report()
    return finish(model, s, ctx)
