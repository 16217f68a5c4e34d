"""Sparse latency kernels: the CSR linear computes what the dense linear computes, the latency
evaluator runs through it and records it, and the dense modules come back afterwards."""

from __future__ import annotations

import pytest
import torch

from harness.evaluation.latency import measure
from harness.evaluation.sparse_kernels import CSRLinear
from methods.registry import build_method
from tests.kernel_helpers import logits_dense_and_through_kernel
from tests.methods.tiny_block_helpers import tiny_context
from harness.targets import Target

SECTION = {"warmup": 0, "repeats": 2, "prefill": {"batch": [1], "prompt_len": [8]},
           "decode": {"batch": [1], "prompt_len": 4, "new_tokens": 2}}


def test_csr_linear_equals_dense():
    lin = torch.nn.Linear(48, 32, bias=True)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) > 0.9)            # 90% zeros
    x = torch.randn(2, 5, 48)
    torch.testing.assert_close(CSRLinear(lin)(x), lin(x), rtol=1e-5, atol=1e-6)


def test_latency_runs_through_csr_and_restores_the_model():
    model, adapter, ctx = tiny_context(Target("unstructured_70", "unstructured", 0.7))
    build_method("magnitude").prune(model, ctx)
    ids = torch.randint(0, 250, (1, 12))
    dense_logits, sparse_logits, info = logits_dense_and_through_kernel(model, adapter, "csr", CSRLinear, ids)
    torch.testing.assert_close(sparse_logits, dense_logits, rtol=1e-4, atol=1e-5)
    assert info["sparse_linears_sparsity"] == pytest.approx(0.7, abs=0.01)
    r = measure(model, {**SECTION, "sparse_kernel": "csr"}, "cpu")
    assert r["kernel_path"] == "sparse:csr" and r["sparse_kernel"] == "csr"
    assert r["sparse_linears"] == 7 * len(adapter.blocks(model))


def test_unknown_kernel_and_exclusive_with_semi_structured(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="sparse_kernel"):
        measure(model, {**SECTION, "sparse_kernel": "cusparse_magic"}, "cpu")
    with pytest.raises(ValueError, match="exclusive"):
        measure(model, {**SECTION, "sparse_kernel": "csr", "semi_structured": True}, "cpu")
