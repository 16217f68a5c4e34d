"""Layer replacement (LLM-Streamline): a lightweight module stands in for removed blocks.

Chen et al. 2024, "Compressing Large Language Models by Streamlining the Unimportant Layer"
(LLM-Streamline, arXiv:2403.19135; reference: github.com/RUCKBReasoning/LLM-Streamline). After a
contiguous span of blocks [a, b) is removed, a lightweight network is trained so that, fed the dense
model's hidden state entering block a, it reproduces the dense hidden state leaving block b-1
(MSE; `loss: token_normalized_mse` is an option), and runs where the span was.

`module: layer` (default, the reference's: train_lightweightnetwork.py `init_layer`, and its
README: "the parameter weights of the first pruned layer are inherited for training, as this
approach produces better results compared to using FFN or SwiGLU") is one full decoder layer
initialised from the span's *first* block, trained on the span's input hidden states with the
kwargs that block received in the dense forward (rotary position embeddings, causal mask,
position ids), then inserted into the decoder list where the span was (a real block: KV-cache
slot, config and save/reload as any other, `harness.surgery.insert_block`).
prunebench variants, attached to the neighbouring kept block (see `attach`): `module: linear`, one
hidden x hidden linear layer (identity-initialised); `module: ffn`, a residual pre-norm MLP copied
from the span's last block with its down projection zeroed (the reference's MLP example trains a
freshly initialised 2-layer ReLU MLP instead, inheriting nothing); both start as the layer-pruned
model and only improve on it.
Differences from the reference: the replacement layer is added on top of the depth target's
removed blocks (the reference picks a span one block longer than the count it removes and
replaces it by one layer; here the depth method removes n blocks and one layer comes back, so the
model keeps n-1 fewer blocks; `params_added` reports it); each maximal contiguous run of removed
blocks gets its own module (the paper removes one span); training uses the recovery budget (steps,
corpus; the reference: SlimPajama, AdamW lr 2e-4, weight decay 1e-3, one epoch) and keeps the last
state (the reference keeps the best validation epoch); the teacher is the dense model reloaded
from the run's source.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from harness.recovery.train import finish, start, train
from harness.errors import ConfigError

OWN_KEYS = {"module", "loss"}
MODULES = ("layer", "linear", "ffn")
# the block kwargs a replacement layer is trained with: the dense forward's, minus the KV cache
_NO_CACHE = ("hidden_states", "past_key_values", "past_key_value", "use_cache")
LOSSES = ("mse", "token_normalized_mse")


def check(params: dict) -> None:
    """This recovery's own keys; the shared budget is parsed once, by harness.recovery.check_recovery."""
    if params.get("module", "layer") not in MODULES:
        raise ConfigError(f"recovery replace: module must be one of {', '.join(MODULES)}")
    if params.get("loss", "mse") not in LOSSES:
        raise ConfigError(f"recovery replace: loss must be one of {', '.join(LOSSES)}")


def hidden_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """pred/target [batch, seq, hidden]. `mse` is the paper's objective; `token_normalized_mse`
    divides each token's squared error by the target token's mean square, so the few tokens that
    carry massive activations (attention sinks) do not dominate the fit."""
    err = (pred.float() - target.float()).pow(2).mean(-1)           # [batch, seq]
    if kind == "mse":
        return err.mean()
    return (err / target.float().pow(2).mean(-1).clamp_min(1e-6)).mean()


def contiguous_spans(removed: list[int]) -> list[tuple[int, int]]:
    """[2, 3, 4, 9] -> [(2, 5), (9, 10)] (half-open spans of original block indices)."""
    spans: list[tuple[int, int]] = []
    for i in sorted(set(removed)):
        if spans and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


class _ResidualMLP(nn.Module):
    """x + mlp(norm(x)): the pre-norm MLP half of a decoder block."""

    def __init__(self, norm: nn.Module, mlp: nn.Module):
        super().__init__()
        self.norm, self.mlp = norm, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, seq, hidden]
        return x + self.mlp(self.norm(x))


def attach(block: nn.Module, core: nn.Module, where: str) -> None:
    """Run `core` on the block's output (where="post") or input (where="pre").

    The module is registered as a submodule of a kept block (so parameters() counts it and it moves
    with the model) instead of as a new entry in the decoder ModuleList: every block in that list
    stays a real decoder block, so sparsity measurement, adapters and surgery need no special case."""
    block.add_module(f"streamline_{where}", core)
    if where == "post":
        def hook(module, args, output):
            if isinstance(output, (tuple, list)):
                return (core(output[0]), *output[1:])
            return core(output)
        block.register_forward_hook(hook)
    else:
        def pre_hook(module, args, kwargs):
            if args:
                return (core(args[0]), *args[1:]), kwargs
            return args, kwargs | {"hidden_states": core(kwargs["hidden_states"])}
        block.register_forward_pre_hook(pre_hook, with_kwargs=True)


def _build_core(kind: str, teacher, adapter, span: tuple[int, int], hidden: int) -> nn.Module:
    if kind == "layer":   # the reference's: a copy of the span's first block, weights and all
        return copy.deepcopy(adapter.blocks(teacher)[span[0]])
    if kind == "linear":
        lin = nn.Linear(hidden, hidden, bias=True)
        with torch.no_grad():
            lin.weight.copy_(torch.eye(hidden))
            lin.bias.zero_()
        return lin
    if not adapter.mlp:
        raise ValueError(f"recovery replace: module ffn needs a separate MLP module (family {adapter.family})")
    block = adapter.blocks(teacher)[span[1] - 1]
    mlp = copy.deepcopy(adapter.mlp_module(block))
    out = getattr(mlp, adapter.mlp_output)
    with torch.no_grad():
        out.weight.zero_()
        if out.bias is not None:
            out.bias.zero_()
    return _ResidualMLP(copy.deepcopy(getattr(block, adapter.mlp_norm)), mlp)


class _Stop(Exception):
    pass


def _boundary_states(teacher, adapter, spans, x: torch.Tensor) -> tuple[list, list, list]:
    """Dense hidden states entering block a and leaving block b-1 for every span
    ([batch, seq, hidden]), and the other kwargs block a received (position embeddings, mask)."""
    blocks = adapter.blocks(teacher)
    ins: dict[int, torch.Tensor] = {}
    kws: dict[int, dict] = {}
    outs: dict[int, torch.Tensor] = {}
    last = max(b for _, b in spans) - 1
    handles = []

    def pre(idx):
        def hook(module, args, kwargs):
            ins[idx] = args[0] if args else kwargs["hidden_states"]
            kws[idx] = {k: v for k, v in kwargs.items() if k not in _NO_CACHE}
        return hook

    def post(idx):
        def hook(module, args, kwargs, output):
            outs[idx] = adapter.block_output(output)
            if idx == last:
                raise _Stop  # nothing after the last span is needed
        return hook

    for a, b in spans:
        handles.append(blocks[a].register_forward_pre_hook(pre(a), with_kwargs=True))
        handles.append(blocks[b - 1].register_forward_hook(post(b - 1), with_kwargs=True))
    try:
        with torch.no_grad():
            teacher(input_ids=x, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return [ins[a] for a, _ in spans], [outs[b - 1] for _, b in spans], [kws[a] for a, _ in spans]


def _place_cores(model, adapter, teacher, spans: list, cores: nn.ModuleList, removed_set: set, kind: str,
                 n_dense: int) -> None:
    """Put each trained stand-in where its span was. The span sat between kept blocks; its stand-in
    runs after the kept block before it (or before the first kept block when the span starts the
    stack). position = kept blocks before the span."""
    blocks = adapter.blocks(model)
    positions = [sum(1 for i in range(a) if i not in removed_set) for a, _ in spans]
    if kind == "layer":   # a real decoder block where its span was; later spans shift by the earlier inserts
        from harness.surgery import insert_block, per_layer_config

        teacher_layers = per_layer_config(teacher.config, n_dense)
        for k, ((a, _), core, position) in enumerate(zip(spans, cores, positions)):
            insert_block(model, adapter, position + k, core, {key: v[a] for key, v in teacher_layers.items()})
    else:
        for core, position in zip(cores, positions):
            if position > 0:
                attach(blocks[position - 1], core, "post")
            else:
                attach(blocks[0], core, "pre")


def recover(model, tokenizer, params: dict, ctx) -> dict:
    check(params)
    removed = ctx.removed_blocks()
    if not removed:
        raise ValueError("recovery replace needs removed blocks (a depth method's report names them "
                         "under `removed`); the pruning method removed none")
    s = start(model, tokenizer, params, ctx, OWN_KEYS, "replace")
    teacher, _, teacher_info = ctx.load_teacher()
    adapter = ctx.adapter
    n_dense = len(adapter.blocks(teacher))
    if len(adapter.blocks(model)) != n_dense - len(set(removed)):
        raise ValueError(f"recovery replace: pruned model has {len(adapter.blocks(model))} blocks, expected "
                         f"{n_dense} - {len(set(removed))} removed (blocks must be physically removed)")
    spans = contiguous_spans(removed)
    kind = params.get("module", "layer")
    loss_kind = params.get("loss", "mse")
    hidden = adapter.embedding(teacher).weight.shape[1]
    ref = next(model.parameters())
    cores = nn.ModuleList(_build_core(kind, teacher, adapter, span, hidden) for span in spans).to(ref.device, ref.dtype)
    trainable = {f"core{i}.{n}": p for i, c in enumerate(cores) for n, p in c.named_parameters()}
    for p in trainable.values():
        p.requires_grad_(True)
    cores.train()

    def run_core(core, h, kw):   # h: [batch, seq, hidden]
        return adapter.block_output(core(h, **kw)) if kind == "layer" else core(h)

    def loss_fn(x):  # x: [batch, seq_len]
        h_in, h_out, kws = _boundary_states(teacher, adapter, spans, x)
        return sum(hidden_loss(run_core(core, hi, kw), ho, loss_kind)
                   for core, hi, ho, kw in zip(cores, h_in, h_out, kws)) / len(spans)

    with torch.no_grad():  # the starting point: the first pruned block (layer) or the layer-pruned model
        x0 = s.corpus.heldout[: s.budget.batch_size].to(ctx.device)
        mse_before = float(loss_fn(x0))
    stats = train(trainable, loss_fn, s.corpus.train, s.budget, ctx.checkpoint_dir, "replace", device=ctx.device)
    cores.eval()
    with torch.no_grad():
        mse_after = float(loss_fn(x0))
    for p in trainable.values():
        p.requires_grad_(False)
    _place_cores(model, adapter, teacher, spans, cores, set(removed), kind, n_dense)
    del teacher
    s.report |= stats | {"replace": {"module": kind, "loss": loss_kind, "spans": [list(sp) for sp in spans],
                                     "params_added": sum(p.numel() for p in trainable.values()),
                                     "heldout_hidden_loss_before": mse_before, "heldout_hidden_loss_after": mse_after,
                                     "teacher": teacher_info}}
    return finish(model, s, ctx)
