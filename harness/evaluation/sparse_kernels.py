"""Sparse kernels for unstructured-sparse block linears (latency only; `eval.latency.sparse_kernel`).

none   dense GEMMs (the pruned zeros are multiplied like any other weight)
csr    the weight as a torch.sparse CSR tensor; y^T = W_csr @ x^T (torch.sparse.mm; MKL / native on
       CPU, cuSPARSE on CUDA). Pays off only at high sparsity and skinny inputs (decoding), the
       regime Flash-LLM (Xia et al., VLDB 2024, arXiv:2309.10285) targets; benchmarks/sparse_kernels.py
       prints the crossover per shape and sparsity.
flash_llm  Flash-LLM's load-as-sparse, compute-as-dense SpMM in Triton (harness.evaluation.flash_llm):
       the weight in a tiled bitmask format (packed nonzeros + one bit per element + per-tile
       offsets), each tile expanded in registers and multiplied densely on the tensor cores.
       CUDA only (triton); on CPU only under TRITON_INTERPRET=1, for numerical checks.

Kernels are registry entries ("module:attribute" strings are imported on first use, so triton is
imported only when a run asks for flash_llm). A kernel module may define `check(device)`, which
refuses a device it cannot run on in one line before any weight is converted.

`sparse_kernel_weights` swaps every block linear for the kernel's module during the measurement
and restores the dense modules afterwards, so the record's latency says which kernel ran.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from harness.blocks.measure import count_zeros
from harness.registry import Registry


class CSRLinear(nn.Module):
    """nn.Linear with its weight [out, in] stored in CSR; inputs flattened to [tokens, in]."""

    kernel = "csr"

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()           # [out, in] CSR
        self.bias = linear.bias
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])                                # [tokens, in]
        y = torch.sparse.mm(self.weight, flat.t()).t()                   # [tokens, out]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


# name -> the module replacing nn.Linear (None: the dense linears stay)
SPARSE_KERNELS: Registry[type[nn.Module] | None] = Registry("latency.sparse_kernel", {
    "none": None, "csr": CSRLinear, "flash_llm": "harness.evaluation.flash_llm:FlashLLMLinear"})


def register_sparse_kernel(name: str, module: type[nn.Module] | str) -> None:
    """Add a kernel: its module class, or a "module:attribute" string imported on first use."""
    SPARSE_KERNELS.add(name, module)


def check_kernel(name: str, device: str | None = None) -> None:
    """Refuse an unknown kernel name, or (given the device) a kernel that cannot run there; a
    one-line ValueError (ConfigError) either way."""
    module = SPARSE_KERNELS.get(name)
    check = getattr(module, "check", None)
    if check is not None:
        check(device)


@contextmanager
def sparse_kernel_weights(model: nn.Module, adapter, name: str):
    """Swap block linears for the `name` kernel's module; yields what ran (kernel, linears
    swapped, their mean sparsity) and restores the dense modules afterwards."""
    device = str(next(model.parameters()).device)
    check_kernel(name, device)
    module = SPARSE_KERNELS.get(name)
    if module is None:
        yield {"sparse_kernel": "none"}
        return
    swapped, zeros, total = [], 0, 0
    try:
        for block in adapter.blocks(model):
            for child_name, lin in adapter.linears(block).items():
                parent_name, _, child = child_name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                zeros += count_zeros(lin.weight)
                total += lin.weight.numel()
                setattr(parent, child, module(lin))
                swapped.append((parent, child, lin))
        info = getattr(module, "record", None)   # what else the record needs to say (kernel settings)
        yield {"sparse_kernel": name, "sparse_linears": len(swapped),
               "sparse_linears_sparsity": zeros / max(total, 1), **(info() if info else {})}
    finally:
        for parent, child, lin in swapped:
            setattr(parent, child, lin)
