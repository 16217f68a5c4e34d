"""Layer replacement (LLM-Streamline): a lightweight module stands in for removed blocks.

Chen et al. 2024, "Compressing Large Language Models by Streamlining the Unimportant Layer"
(LLM-Streamline, arXiv:2403.19135; reference: github.com/RUCKBReasoning/LLM-Streamline). After a
contiguous span of blocks [a, b) is removed, a lightweight network is trained so that, fed the dense
model's hidden state entering block a, it reproduces the dense hidden state leaving block b-1
(MSE; `loss: token_normalized_mse` is an option), and runs where the span was (attached to the neighbouring kept block, see `attach`). `module: linear` is one hidden x hidden linear layer
(identity-initialised); `module: ffn` is a residual pre-norm MLP copied from the span's last block
with its down projection zeroed, so both start as the layer-pruned model and only improve on it.
Differences from the reference: each maximal contiguous run of removed blocks gets its own module
(the paper removes one span); training uses the recovery budget's corpus rather than the paper's
SlimPajama sample; the teacher is the dense model reloaded from the run's source.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from harness.recovery.train import finish, start, train
from harness.errors import ConfigError

OWN_KEYS = {"module", "loss"}
MODULES = ("linear", "ffn")
LOSSES = ("mse", "token_normalized_mse")


def check(params: dict) -> None:
    from harness.recovery.train import parse_budget

    parse_budget(params, OWN_KEYS, "replace")
    if params.get("module", "linear") not in MODULES:
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


def _boundary_states(teacher, adapter, spans, x: torch.Tensor) -> tuple[list, list]:
    """Dense hidden states entering block a and leaving block b-1 for every span; [batch, seq, hidden]."""
    blocks = adapter.blocks(teacher)
    ins: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}
    last = max(b for _, b in spans) - 1
    handles = []

    def pre(idx):
        def hook(module, args, kwargs):
            ins[idx] = args[0] if args else kwargs["hidden_states"]
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
            teacher(input_ids=x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return [ins[a] for a, _ in spans], [outs[b - 1] for _, b in spans]


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
    kind = params.get("module", "linear")
    loss_kind = params.get("loss", "mse")
    hidden = adapter.embedding(teacher).weight.shape[1]
    ref = next(model.parameters())
    cores = nn.ModuleList(_build_core(kind, teacher, adapter, span, hidden) for span in spans).to(ref.device, ref.dtype)
    trainable = {f"core{i}.{n}": p for i, c in enumerate(cores) for n, p in c.named_parameters()}
    for p in trainable.values():
        p.requires_grad_(True)
    cores.train()

    def loss_fn(x):  # x: [batch, seq_len]
        h_in, h_out = _boundary_states(teacher, adapter, spans, x)
        return sum(hidden_loss(core(hi), ho, loss_kind) for core, hi, ho in zip(cores, h_in, h_out)) / len(spans)

    with torch.no_grad():  # the starting point: identity, i.e. the layer-pruned model
        x0 = s.corpus.heldout[: s.budget.batch_size].to(ctx.device)
        mse_before = float(loss_fn(x0))
    stats = train(trainable, loss_fn, s.corpus.train, s.budget, ctx.checkpoint_dir, "replace", device=ctx.device)
    cores.eval()
    with torch.no_grad():
        mse_after = float(loss_fn(x0))
    for p in trainable.values():
        p.requires_grad_(False)
    # The span sat between kept blocks; its stand-in runs after the kept block before it (or before
    # the first kept block when the span starts the stack). position = kept blocks before the span.
    removed_set = set(removed)
    blocks = adapter.blocks(model)
    for (a, b), core in zip(spans, cores):
        position = sum(1 for i in range(a) if i not in removed_set)
        if position > 0:
            attach(blocks[position - 1], core, "post")
        else:
            attach(blocks[0], core, "pre")
    del teacher
    s.report |= stats | {"replace": {"module": kind, "loss": loss_kind, "spans": [list(sp) for sp in spans],
                                     "params_added": sum(p.numel() for p in trainable.values()),
                                     "heldout_hidden_loss_before": mse_before, "heldout_hidden_loss_after": mse_after,
                                     "teacher": teacher_info}}
    return finish(model, s, ctx)
