"""Flash-LLM-style SpMM in Triton: load as sparse, compute as dense (Xia et al., VLDB 2024, arXiv:2309.10285).

Decoding multiplies a few token rows by every weight, so the linear is bound by the bytes of the
weight it reads, not by arithmetic. Flash-LLM therefore reads the weight in a compressed format,
expands each tile to dense on chip and multiplies it on the tensor cores as if it were dense: at
sparsity s the memory traffic shrinks with s while the math stays a dense tile product.

Format (`pack`): the weight [out, in] is cut into tiles of BLOCK_N output rows x BLOCK_K inputs
(the edges padded with zeros to whole tiles). Per tile, in tile order (output tile major, then K tile):
  values        the tile's nonzeros, row-major within the tile, packed back to back (weight dtype)
  bitmask       one bit per tile element, BLOCK_K // 32 int32 words per tile row; bit j of word w
                of row r is element (r, 32 w + j)
  tile_offsets  int32 [tiles + 1]: where each tile's values start in `values` (exclusive prefix sum)
The kernel finds the packed position of element (r, k) as the tile's offset + the nonzeros of the
rows before r + the set bits before k in row r (two prefix sums over the expanded bits), and gathers
the value from there; unset bits load nothing.

Why this and not Flash-LLM's exact Tiled-CSL (value + 16-bit in-tile location per nonzero): Triton
has no scatter into registers or shared memory, so a (value, location) list cannot be expanded into
a tile; a bitmask turns the expansion into a gather (every tile element computes where its value
sits), which Triton expresses with cumsum and a masked load. The bitmask is also smaller than the
locations at the sparsities that matter: with e bytes per value (2 for bf16/fp16),
  bitmask format  bytes/weight = (1 - s) e + 1/8 + 4 / (BLOCK_N BLOCK_K)
  Tiled-CSL       bytes/weight = (1 - s) (e + 2)
  dense           bytes/weight = e
so in bf16 the bitmask format reads less than dense from s > ~6.4% and less than Tiled-CSL for
s < 15/16; at 80% it moves 0.53 bytes/weight against dense 2 (3.8x fewer bytes). `packed_bytes`
computes the exact count (tiles padded at the edges count as whole tiles).

Why per-tile offsets and not a fixed per-tile capacity: a capacity must fit the densest tile, and
pruned weights are not uniform (Wanda/OWL layers, a dense row, a fully dense tile set the capacity
to BLOCK_N x BLOCK_K and the format stops compressing); the offsets cost 4 bytes per tile.

Kernel: program (n, m, split) owns BLOCK_N output features and BLOCK_M token rows (>= 16: tl.dot's
minimum on tensor cores) and loops over its share of the K tiles: load the tile's bitmask words and
offset, expand to a dense [BLOCK_N, BLOCK_K] tile in registers, load the activation tile
[BLOCK_M, BLOCK_K] and accumulate tl.dot(x, w^T) in float32. With few output tiles (decode shapes
on a GPU with many SMs) the K loop is split across programs (split-K); their float32 partial sums
are added afterwards. On CUDA the operands are the weight's dtype (bf16/fp16 on tensor cores;
float32 with IEEE precision, no TF32); Triton's interpreter (TRITON_INTERPRET=1) runs the same
kernel on CPU tensors for numerical checks, far too slowly to time.

triton is imported on first use, never at import of this module: harness imports without it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

BLOCK_N = 64          # output features per program (and per tile)
BLOCK_K = 64          # inputs per tile: a multiple of 32 (bitmask words) and a power of 2
MAX_BLOCK_M = 64      # token rows per program; prefill-sized inputs get more programs along M


def interpreting() -> bool:
    """Triton's interpreter is on (TRITON_INTERPRET=1): kernels run in numpy on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def check_available(device: str | None) -> None:
    """One-line ValueError unless the kernel can run on `device`: triton importable, and a CUDA
    device or the interpreter. On CPU without the interpreter we refuse rather than silently run
    the interpreter: its timings measure numpy, not a sparse kernel."""
    if importlib.util.find_spec("triton") is None:
        raise ValueError("latency.sparse_kernel=flash_llm needs triton (pip install triton==3.6.0)")
    if device is not None and not str(device).startswith("cuda") and not interpreting():
        raise ValueError(f"latency.sparse_kernel=flash_llm needs a CUDA device (got {device}); on CPU "
                         "it runs only under TRITON_INTERPRET=1, for numerical checks, not latency")
    language = sys.modules.get("triton.language")
    if language is not None:
        # tl.zeros, tl.cumsum, ... were decorated when triton.language was imported, interpreted or
        # not; a kernel built in the other mode fails deep inside triton
        from triton.runtime.interpreter import InterpretedFunction

        if isinstance(language.zeros, InterpretedFunction) != interpreting():
            raise ValueError("flash_llm: TRITON_INTERPRET changed after triton.language was imported; "
                             "set it before the process starts")


@dataclass
class PackedWeight:
    """The tiled bitmask format of one weight (see the module docstring)."""

    values: torch.Tensor        # [nnz] weight dtype, tile after tile, row-major within a tile
    bitmask: torch.Tensor       # [n_tiles, k_tiles, BLOCK_N, BLOCK_K // 32] int32
    tile_offsets: torch.Tensor  # [n_tiles * k_tiles + 1] int32
    shape: tuple[int, int]      # (out, in) of the dense weight
    block_n: int
    block_k: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.bitmask, self.tile_offsets))


def packed_bytes(out_features: int, in_features: int, nnz: int, value_bytes: int,
                 block_n: int = BLOCK_N, block_k: int = BLOCK_K) -> int:
    """Bytes of the packed format: nnz values + one bit per (padded) tile element + one int32
    offset per tile and one more (the end)."""
    tiles = -(-out_features // block_n) * -(-in_features // block_k)
    return nnz * value_bytes + tiles * block_n * block_k // 8 + (tiles + 1) * 4


def _check_blocks(block_n: int, block_k: int) -> None:
    if block_n < 16 or block_n & (block_n - 1):
        raise ValueError(f"flash_llm block_n must be a power of 2 >= 16 (tl.dot), got {block_n}")
    if block_k < 32 or block_k & (block_k - 1):
        raise ValueError(f"flash_llm block_k must be a power of 2 >= 32 (int32 bitmask words), got {block_k}")


def _tiles(weight: torch.Tensor, block_n: int, block_k: int) -> torch.Tensor:
    """[out, in] -> [n_tiles, k_tiles, block_n, block_k], zero-padded at the edges."""
    out_f, in_f = weight.shape
    nt, kt = -(-out_f // block_n), -(-in_f // block_k)
    padded = weight.new_zeros(nt * block_n, kt * block_k)
    padded[:out_f, :in_f] = weight
    return padded.reshape(nt, block_n, kt, block_k).permute(0, 2, 1, 3)


@torch.no_grad()
def pack(weight: torch.Tensor, block_n: int = BLOCK_N, block_k: int = BLOCK_K) -> PackedWeight:
    """Compress a dense [out, in] weight (its zeros are the pruned entries) on its own device."""
    _check_blocks(block_n, block_k)
    tiles = _tiles(weight.detach(), block_n, block_k)                  # [nt, kt, bn, bk]
    nz = tiles != 0
    nnz = int(nz.sum())
    if nnz >= 2 ** 31:
        raise ValueError(f"flash_llm: {nnz} nonzeros exceed int32 tile offsets")
    values = tiles[nz].contiguous()                                    # boolean index: row-major per tile
    counts = nz.sum(dim=(2, 3)).flatten()                              # [nt * kt]
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=weight.device)
    offsets[1:] = counts.cumsum(0)
    bits = nz.reshape(*nz.shape[:3], block_k // 32, 32).to(torch.int64)   # [nt, kt, bn, words, 32]
    words = (bits << torch.arange(32, device=weight.device)).sum(-1)       # [nt, kt, bn, words] in [0, 2^32)
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)   # same bits as int32
    return PackedWeight(values, words.contiguous(), offsets.to(torch.int32), tuple(weight.shape),
                        block_n, block_k)


@torch.no_grad()
def unpack(p: PackedWeight) -> torch.Tensor:
    """The dense [out, in] weight back from the packed format (the kernel's expansion, in torch)."""
    bits = (p.bitmask.unsqueeze(-1) >> torch.arange(32, device=p.bitmask.device, dtype=torch.int32)) & 1
    nz = bits.reshape(*p.bitmask.shape[:3], p.block_k).bool()           # [nt, kt, bn, bk]
    tiles = p.values.new_zeros(nz.shape)
    tiles[nz] = p.values
    nt, kt = nz.shape[:2]
    dense = tiles.permute(0, 2, 1, 3).reshape(nt * p.block_n, kt * p.block_k)
    return dense[:p.shape[0], :p.shape[1]].clone()


@functools.cache
def _kernel(interpret: bool):
    """The jitted kernel, built on first use (triton imported here). Keyed by the interpreter flag
    because triton.jit picks the interpreter at decoration time."""
    import triton
    import triton.language as tl

    @triton.jit
    def spmm(x_ptr, bitmask_ptr, values_ptr, tile_offsets_ptr, out_ptr,
             M, N, K, stride_xm, stride_xk, stride_os, stride_om, stride_on, k_tiles,
             TILES_PER_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr):
        WORDS: tl.constexpr = BLOCK_K // 32
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_s = tl.program_id(2)
        rn = tl.arange(0, BLOCK_N)                                        # [BN] row in the tile
        rk = tl.arange(0, BLOCK_K)                                        # [BK]
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                      # [BM] token rows
        word_ptrs = rn[:, None] * WORDS + tl.arange(0, WORDS)[None, :]    # [BN, WORDS]
        bit = tl.arange(0, 32)[None, None, :]                             # [1, 1, 32]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        # The trip count is a constexpr: Triton 3.6's interpreter cannot take a runtime scalar as a
        # range bound under numpy 2.4 (int() of a 1-element array), and a known count lets the
        # compiler pipeline the loop; one compilation per (shape, splits). The last split may run
        # past k_tiles: those tiles load no bits, hence no values, and their activation columns
        # are >= K (masked).
        for i in range(0, TILES_PER_SPLIT):
            kt = pid_s * TILES_PER_SPLIT + i
            live = kt < k_tiles
            tile = pid_n * k_tiles + kt
            start = tl.load(tile_offsets_ptr + tile, mask=live, other=0)
            words = tl.load(bitmask_ptr + tile * (BLOCK_N * WORDS) + word_ptrs, mask=live, other=0)  # [BN, WORDS]
            bits = tl.reshape((words[:, :, None] >> bit) & 1, (BLOCK_N, BLOCK_K))       # [BN, BK] 0/1
            row_nnz = tl.sum(bits, axis=1)                                              # [BN]
            row_start = tl.cumsum(row_nnz, axis=0) - row_nnz                            # [BN] exclusive
            pos = start + row_start[:, None] + tl.cumsum(bits, axis=1) - bits           # [BN, BK]
            w = tl.load(values_ptr + pos, mask=bits != 0, other=0.0)                    # [BN, BK] expanded
            k = kt * BLOCK_K + rk
            a = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :] * stride_xk,
                        mask=(rm[:, None] < M) & (k[None, :] < K), other=0.0)           # [BM, BK]
            if IEEE:   # float32 operands: exact products, not TF32
                acc += tl.dot(a, tl.trans(w), input_precision="ieee")
            else:
                acc += tl.dot(a, tl.trans(w))                                           # [BM, BN]
        cols = pid_n * BLOCK_N + rn
        tl.store(out_ptr + pid_s * stride_os + rm[:, None] * stride_om + cols[None, :] * stride_on,
                 acc.to(out_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (cols[None, :] < N))

    return spmm


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _block_m(tokens: int) -> int:
    return min(MAX_BLOCK_M, max(16, 1 << (max(tokens, 1) - 1).bit_length()))


def split_k(tokens: int, p: PackedWeight, device: torch.device) -> int:
    """Split the K loop when the output tiles alone leave SMs idle (decode shapes): about two
    programs per SM. 1 on CPU (the interpreter runs programs one after another)."""
    k_tiles = p.bitmask.shape[1]
    if device.type != "cuda":
        return 1
    programs = p.bitmask.shape[0] * -(-tokens // _block_m(tokens))
    want = max(1, min(k_tiles, -(-2 * _sm_count(device.index or 0) // programs)))
    return -(-k_tiles // -(-k_tiles // want))   # no empty splits


def spmm_into(x: torch.Tensor, p: PackedWeight, out: torch.Tensor) -> None:
    """out[s] = x @ W^T restricted to split s's K tiles; x [tokens, in], out [splits, tokens, out]
    (any float dtype; the kernel writes every element of it)."""
    tokens = x.shape[0]
    splits = out.shape[0]
    k_tiles = p.bitmask.shape[1]
    if x.dtype != p.values.dtype:
        raise ValueError(f"flash_llm: input {x.dtype} but weight {p.values.dtype}")
    if out.shape[1:] != (tokens, p.shape[0]) or x.shape[1] != p.shape[1]:
        raise ValueError(f"flash_llm: x {tuple(x.shape)}, out {tuple(out.shape)} for weight {p.shape}")
    block_m = _block_m(tokens)
    grid = (p.bitmask.shape[0], -(-tokens // block_m), splits)
    _kernel(interpreting())[grid](
        x, p.bitmask, p.values, p.tile_offsets, out, tokens, p.shape[0], p.shape[1],
        x.stride(0), x.stride(1), out.stride(0), out.stride(1), out.stride(2), k_tiles,
        TILES_PER_SPLIT=-(-k_tiles // splits), BLOCK_M=block_m, BLOCK_N=p.block_n, BLOCK_K=p.block_k, IEEE=x.dtype == torch.float32)


def spmm(x: torch.Tensor, p: PackedWeight, splits: int | None = None) -> torch.Tensor:
    """x [tokens, in] @ W^T -> [tokens, out] in x's dtype."""
    splits = split_k(x.shape[0], p, x.device) if splits is None else splits
    if splits == 1:   # the kernel writes the result directly
        out = torch.empty(1, x.shape[0], p.shape[0], dtype=x.dtype, device=x.device)
        spmm_into(x, p, out)
        return out[0]
    partial = torch.empty(splits, x.shape[0], p.shape[0], dtype=torch.float32, device=x.device)
    spmm_into(x, p, partial)
    return partial.sum(0).to(x.dtype)   # float32 sum of the splits' partials, rounded once


class FlashLLMLinear(nn.Module):
    """nn.Linear with its weight [out, in] in the tiled bitmask format, multiplied by the Triton
    kernel; inputs flattened to [tokens, in]."""

    kernel = "flash_llm"

    @staticmethod
    def check(device: str | None) -> None:
        check_available(device)

    @staticmethod
    def record() -> dict:
        """The settings the latency record keeps: tile sizes, triton version, and whether the
        interpreter ran (then the timings are the interpreter's, not the kernel's)."""
        import triton

        return {"flash_llm": {"block_n": BLOCK_N, "block_k": BLOCK_K, "triton": triton.__version__,
                              "interpreted": interpreting()}}

    def __init__(self, linear: nn.Linear, block_n: int = BLOCK_N, block_k: int = BLOCK_K):
        super().__init__()
        w = linear.weight
        if w.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"flash_llm: weight dtype {w.dtype} (float16/bfloat16/float32 only)")
        check_available(str(w.device))
        p = pack(w, block_n, block_k)
        self.register_buffer("values", p.values)
        self.register_buffer("bitmask", p.bitmask)
        self.register_buffer("tile_offsets", p.tile_offsets)
        self.shape, self.block_n, self.block_k = p.shape, block_n, block_k
        self.bias = linear.bias
        self.out_features = linear.out_features

    @property
    def packed(self) -> PackedWeight:
        return PackedWeight(self.values, self.bitmask, self.tile_offsets, self.shape, self.block_n, self.block_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])                                # [tokens, in]
        y = spmm(flat, self.packed)                                      # [tokens, out]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)
