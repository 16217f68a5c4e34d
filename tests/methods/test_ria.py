"""RIA: score definition, N:M valid on stored weights after the channel permutation, and the
permuted pruned MLP computes what the unpermuted MLP computes with the un-permuted mask."""

from __future__ import annotations

import copy

import torch

from harness.blocks.masks import keep_nm, nm_violations
from harness.blocks.measure import measure_sparsity
from harness.targets import Target
from methods.registry import build_method
from methods.ria import permute_channels, retained, ria_score, snake_permutation
from tests.conftest import make_tiny
from tests.methods.tiny_block_helpers import tiny_context


def test_ria_score_definition():
    w = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    s = ria_score(w, torch.tensor([4.0, 9.0]), a=0.5)
    expected = (w.abs() / w.abs().sum(0) + w.abs() / w.abs().sum(1, keepdim=True)) * torch.tensor([2.0, 3.0])
    torch.testing.assert_close(s, expected)


def test_permuted_mlp_matches_unpermuted_masked_mlp():
    model, _ = make_tiny("llama")
    mlp = model.model.layers[0].mlp
    norms = torch.rand(mlp.down_proj.in_features, generator=torch.Generator().manual_seed(0)) + 0.1
    score = ria_score(mlp.down_proj.weight.detach(), norms)                     # [out, in]
    perm = snake_permutation(score, 4)
    assert torch.equal(torch.sort(perm).values, torch.arange(perm.numel()))
    keep_perm = keep_nm(score[:, perm], 2, 4)                                    # mask, permuted order
    permuted = copy.deepcopy(mlp)
    permute_channels(permuted.down_proj, [permuted.gate_proj, permuted.up_proj], perm)
    with torch.no_grad():
        permuted.down_proj.weight.mul_(keep_perm)
        reference = copy.deepcopy(mlp)                                          # original order
        reference.down_proj.weight.mul_(keep_perm[:, torch.argsort(perm)])
    assert nm_violations(permuted.down_proj.weight, 2, 4)[0] == 0               # stored order is N:M
    x = torch.randn(2, 5, mlp.gate_proj.in_features)
    torch.testing.assert_close(permuted(x), reference(x), rtol=1e-5, atol=1e-6)
    # the snake reallocation is a heuristic: it is only applied where it retains more score
    assert retained(score[:, perm], 2, 4) > 0


def test_ria_permute_end_to_end_nm_valid():
    target = Target("nm_2_4", "nm", 0.5, 2, 4)
    model, adapter, ctx = tiny_context(target)
    report = build_method("ria", {"permute": True}).prune(model, ctx)
    m = measure_sparsity(model, adapter, 2, 4)
    assert m["nm_check"]["violations"] == 0 and m["sparsity_blocks"] == 0.5
    layers = report["permutation"]["layers"]
    assert layers and all(name.endswith("mlp.down_proj") for name in layers)
    assert all(g > 0 for g in report["permutation"]["retained_gain"])
