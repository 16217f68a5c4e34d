"""The Flash-LLM-style Triton SpMM (harness.evaluation.flash_llm): the packed format holds exactly
the masked weight in the bytes its docstring states, the kernel computes x @ W^T (checked on CPU
under Triton's interpreter against a float64 reference, every output element written), the latency
evaluator runs through it and records it, and a CPU run without the interpreter is refused up front.
The CUDA checks (bf16 on tensor cores) are marked gpu.

Triton's interpreter must be on before `triton.language` is imported: its library functions
(tl.zeros, tl.cumsum, ...) are decorated then, as interpreted or as GPU-only functions. Another
test or library may import triton first, so the `interpreter`-marked tests run in a child pytest
process started with TRITON_INTERPRET=1 (test_interpreter_checks_in_a_fresh_process); they run in
this process only when it was itself started that way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from harness.adapters import adapter_for  # noqa: E402
from harness.evaluation import flash_llm  # noqa: E402
from harness.evaluation.flash_llm import FlashLLMLinear, pack, packed_bytes, spmm, spmm_into, unpack  # noqa: E402
from harness.evaluation.latency import measure  # noqa: E402
from harness.evaluation.sparse_kernels import check_kernel  # noqa: E402
from tests.conftest import make_tiny  # noqa: E402
from tests.kernel_helpers import logits_dense_and_through_kernel  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# 70 x 150 with 32 x 32 tiles: neither dimension a multiple of the tile (3 x 5 tiles, padded edges)
OUT, IN, BLOCK = 70, 150, 32


def _interpreter_loaded() -> bool:
    """triton.language was imported with the interpreter on (its library functions are interpreted)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return flash_llm.interpreting() and isinstance(tl.zeros, InterpretedFunction)


INTERPRETER = _interpreter_loaded()
interpreted = pytest.mark.interpreter


@pytest.fixture(autouse=True)
def _skip_interpreted_here(request):
    if request.node.get_closest_marker("interpreter") and not INTERPRETER:
        pytest.skip("runs in test_interpreter_checks_in_a_fresh_process (TRITON_INTERPRET=1 before triton imports)")
    if request.node.get_closest_marker("gpu") and INTERPRETER:
        pytest.skip("the CUDA kernel cannot compile once triton.language is loaded interpreted")


@pytest.mark.skipif(INTERPRETER, reason="this process runs the interpreter tests itself")
def test_interpreter_checks_in_a_fresh_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", str(Path(__file__).relative_to(REPO)), "-q",
                        "-m", "interpreter", "-p", "no:cacheprovider"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary and "deselected" in summary, summary


def sparse_weight(sparsity: float, seed: int, out: int = OUT, inp: int = IN, block: int = BLOCK) -> torch.Tensor:
    """Random unstructured mask at `sparsity`, with tile (0, 1) all zero and tile (1, 2) fully dense."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    w = w * (torch.rand(out, inp, generator=g) >= sparsity)
    w[:block, block:2 * block] = 0
    w[block:2 * block, 2 * block:3 * block] = torch.randn(block, block, generator=g)
    return w


def reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.double() @ w.double().t()                                   # [tokens, out] float64


def test_pack_round_trip_and_byte_count():
    w = sparse_weight(0.7, seed=1)
    p = pack(w, BLOCK, BLOCK)
    assert torch.equal(unpack(p), w)                                     # exact, zeros included
    nnz = int((w != 0).sum())
    assert p.values.numel() == nnz and int(p.tile_offsets[-1]) == nnz
    assert p.nbytes == packed_bytes(OUT, IN, nnz, 4, BLOCK, BLOCK)
    # tile (0, 1) holds nothing, tile (1, 2) all of its 32 x 32 values
    counts = (p.tile_offsets[1:] - p.tile_offsets[:-1]).reshape(3, 5)
    assert counts[0, 1] == 0 and counts[1, 2] == BLOCK * BLOCK
    # bit 31 of a word is a weight too (int32 sign bit): a row with only its last element set
    last = torch.zeros(16, 32)
    last[3, 31] = 2.5
    assert torch.equal(unpack(pack(last, 16, 32)), last)


def test_bytes_formula_against_dense_in_bf16():
    """The docstring's numbers: at 80% a 4096 x 4096 bf16 weight moves ~0.53 bytes per weight
    (3.8x fewer than dense)."""
    n = 4096 * 4096
    per_weight = packed_bytes(4096, 4096, int(0.2 * n), 2) / n
    assert per_weight == pytest.approx(0.2 * 2 + 1 / 8 + 4 / 64 ** 2, rel=1e-6)
    assert 3.7 < 2 / per_weight < 3.9


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("tokens", [1, 3, 16])
@interpreted
def test_kernel_matches_float64_reference(sparsity, tokens):
    w = sparse_weight(sparsity, seed=int(sparsity * 10) + tokens)
    x = torch.randn(tokens, IN, generator=torch.Generator().manual_seed(tokens))
    p = pack(w, BLOCK, BLOCK)
    out = torch.full((1, tokens, OUT), float("nan"))                     # poisoned: every element must be written
    spmm_into(x, p, out)
    assert not out.isnan().any()
    ref = reference(x, w)
    # float32 products accumulated in float32 over K=150: each error within K * 2^-24 of sum |x| |w|
    bound = IN * 2 ** -24 * (x.double().abs() @ w.double().abs().t())
    assert ((out[0].double() - ref).abs() <= bound + 1e-30).all()
    assert (out[0].double() - ref).norm() / ref.norm() < 1e-6


@pytest.mark.parametrize("splits", [2, 4])
@interpreted
def test_split_k_partials_cover_every_tile(splits):
    """5 K tiles in 2 or 4 splits: with 4 the last splits run past the last tile (masked), and every
    split's partial [tokens, out] is written (zeros where it owns no tile)."""
    w = sparse_weight(0.7, seed=5)
    x = torch.randn(3, IN, generator=torch.Generator().manual_seed(5))
    p = pack(w, BLOCK, BLOCK)
    partial = torch.full((splits, 3, OUT), float("nan"))
    spmm_into(x, p, partial)
    assert not partial.isnan().any()
    torch.testing.assert_close(partial.sum(0).double(), reference(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spmm(x, p, splits=splits), partial.sum(0))


@interpreted
def test_linear_module_with_bias_and_leading_dims():
    """Default 64 x 64 tiles, a [2, 3, in] input and a bias: what F.linear returns."""
    lin = torch.nn.Linear(100, 80, bias=True)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) >= 0.8)
    x = torch.randn(2, 3, 100)
    m = FlashLLMLinear(lin)
    assert m.kernel == "flash_llm" and m.packed.block_n == flash_llm.BLOCK_N
    torch.testing.assert_close(m(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)


@interpreted
def test_latency_evaluator_runs_through_the_kernel_and_records_it():
    model, _ = make_tiny("llama", num_hidden_layers=1)                 # the interpreter is slow: 7 linears
    adapter = adapter_for(model)
    with torch.no_grad():
        for block in adapter.blocks(model):
            for lin in adapter.linears(block).values():
                lin.weight.mul_(torch.rand_like(lin.weight) >= 0.7)
    ids = torch.randint(0, 250, (1, 5))
    dense_logits, sparse_logits, info = logits_dense_and_through_kernel(model, adapter, "flash_llm",
                                                                        FlashLLMLinear, ids)
    torch.testing.assert_close(sparse_logits, dense_logits, rtol=1e-4, atol=1e-4)
    assert info["sparse_kernel"] == "flash_llm" and info["flash_llm"]["interpreted"] is True
    section = {"warmup": 0, "repeats": 1, "prefill": {"batch": [1], "prompt_len": [4]},
               "decode": {"batch": [1], "prompt_len": 2, "new_tokens": 1}, "sparse_kernel": "flash_llm"}
    r = measure(model, section, "cpu")
    assert r["kernel_path"] == "sparse:flash_llm" and r["sparse_linears"] == 7 * len(adapter.blocks(model))


@pytest.mark.skipif(INTERPRETER, reason="checks the CPU refusal of a process without the interpreter")
def test_cpu_without_interpreter_is_refused_before_any_work(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs a CUDA device") as exc:
        check_kernel("flash_llm", "cpu")
    assert "\n" not in str(exc.value)
    check_kernel("flash_llm", "cuda")                                   # the device it is meant for
    model, _ = make_tiny("llama")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        measure(model, {"sparse_kernel": "flash_llm"}, "cpu")
    assert all(isinstance(m, torch.nn.Linear) for b in adapter_for(model).blocks(model)
               for m in adapter_for(model).linears(b).values())
    with pytest.raises(ValueError, match="sparse_kernel"):
        check_kernel("flash-llm")                                        # near match named
    # the interpreter switched on after triton.language loaded for GPUs: refused, not a deep triton error
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="set it before the process starts"):
        check_kernel("flash_llm", "cpu")


@pytest.mark.skipif(INTERPRETER, reason="checks the CPU refusal of a process without the interpreter")
def test_config_validation_refuses_flash_llm_on_cpu(monkeypatch, tmp_path):
    from harness.config import compose_config
    from harness.errors import ConfigError
    from harness.run import run_experiment

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = compose_config(["model=tiny-llama", "method=magnitude", "target=unstructured_90", "eval=latency_quick",
                          "eval.latency.sparse_kernel=flash_llm", "runtime.device=cpu",
                          f"paths.results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="flash_llm needs a CUDA device") as info:
        run_experiment(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "records").exists()                          # refused before anything ran


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 16, 100])
def test_cuda_bf16_matches_float64_reference(tokens, monkeypatch):
    """A decode-sized 4096 x 4096 weight at 80% in bf16 on the tensor cores (split-K at 1 and 16
    tokens; 100 tokens take two M blocks)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    g = torch.Generator().manual_seed(tokens)
    w = (torch.randn(4096, 4096, generator=g) * (torch.rand(4096, 4096, generator=g) >= 0.8)).bfloat16().cuda()
    x = torch.randn(tokens, 4096, generator=g).bfloat16().cuda()
    p = pack(w)
    assert torch.equal(unpack(p), w)
    y = spmm(x, p)
    assert y.dtype == torch.bfloat16
    # The reference takes the same bf16 operands in float64, so the products are exact on both
    # sides; what remains is float32 accumulation (within K * 2^-24 of sum |x||w|) and the final
    # rounding to bf16 (within 2^-8 of |ref|, bf16's unit roundoff).
    ref = x.double() @ w.double().t()
    bound = 2 ** -8 * ref.abs() + 4096 * 2 ** -24 * (x.double().abs() @ w.double().abs().t())
    assert ((y.double() - ref).abs() <= bound).all()


@pytest.mark.gpu
def test_cuda_latency_evaluator_in_bf16(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model, _ = make_tiny("llama")
    model = model.to("cuda", torch.bfloat16)
    adapter = adapter_for(model)
    with torch.no_grad():
        for block in adapter.blocks(model):
            for lin in adapter.linears(block).values():
                lin.weight.mul_(torch.rand_like(lin.weight) >= 0.8)
    section = {"warmup": 1, "repeats": 2, "prefill": {"batch": [1], "prompt_len": [64]},
               "decode": {"batch": [1], "prompt_len": 16, "new_tokens": 4}, "sparse_kernel": "flash_llm"}
    r = measure(model, section, "cuda")
    assert r["kernel_path"] == "sparse:flash_llm" and r["flash_llm"]["interpreted"] is False
    assert r["sparse_linears_sparsity"] == pytest.approx(0.8, abs=0.02)
