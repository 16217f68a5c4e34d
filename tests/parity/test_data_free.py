"""Data-free methods: global magnitude (essential_sparsity uses torch's global_unstructured L1
pruning over the chosen linears: exactly int(total * s) smallest |W| across all of them) and the
dense baseline (weights untouched)."""

from __future__ import annotations

import torch

from methods.registry import build_method
from tests.parity.tiny import context, masks, model_pair, unstructured


def test_magnitude_global_equals_one_global_threshold():
    ours, ref = model_pair()
    build_method("magnitude_global").prune(ours, context(ours, unstructured(0.6)))
    lins = [m for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"]
    allw = torch.cat([m.weight.detach().abs().flatten() for m in lins])
    k = int(allw.numel() * 0.6)
    drop = torch.zeros_like(allw, dtype=torch.bool)
    drop[torch.topk(allw, k, largest=False).indices] = True      # torch.nn.utils.prune's L1 rule
    off = 0
    for m in lins:
        n = m.weight.numel()
        m.weight.data[drop[off:off + n].view_as(m.weight)] = 0
        off += n
    got, want = masks(ours), masks(ref)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    per_layer = [float((~got[n]).float().mean()) for n in got]
    assert max(per_layer) - min(per_layer) > 0.01           # global: layers end up different


def test_dense_leaves_weights_untouched():
    ours, ref = model_pair()
    build_method("dense").prune(ours, context(ours, unstructured(0.0)))
    for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.equal(a, b), n
