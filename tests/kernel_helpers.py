"""Running a model's block linears through a latency sparse kernel, for the kernels' tests."""

from __future__ import annotations

import torch


def logits_dense_and_through_kernel(model, adapter, kernel: str, module_type: type, ids: torch.Tensor):
    """(dense logits, logits with every block linear swapped for `kernel`'s module, the swap's info)
    for ids [1, T]; asserts that the swap put `module_type` everywhere and restored the dense
    nn.Linear modules afterwards."""
    from harness.evaluation.sparse_kernels import sparse_kernel_weights

    def linears():
        return [m for b in adapter.blocks(model) for m in adapter.linears(b).values()]

    with torch.no_grad():
        dense = model(ids).logits                                      # [1, T, vocab]
        with sparse_kernel_weights(model, adapter, kernel) as info:
            assert all(isinstance(m, module_type) for m in linears())
            sparse = model(ids).logits
    assert all(isinstance(m, torch.nn.Linear) for m in linears())
    return dense, sparse, info
