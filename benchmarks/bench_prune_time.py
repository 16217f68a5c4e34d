"""Prune time per method on SmolLM2-135M at one calibration preset, split into
  - capture:  embedding pass for block 0's inputs (or reading them from the block cache),
  - forward:  the calibration forwards through each block (collection + propagation: two per
              block per sample with pruned propagation, what Wanda spends), minus
  - collect:  the time spent inside the statistics hooks (norms, Hessians: the method's work),
  - method:   the method's own work on each block (scoring, masks, reconstruction, learning),
and SparseGPT with one Hessian per input group (q/k/v, gate/up shared) against one Hessian per
linear (the reference's cost), with their perplexities.

Each cell is a normal prunebench run (harness.run.run_experiment), so its record lands in
--results-dir; cells already recorded there with the same config are read, not re-run.

    PYTHONPATH=$PWD python benchmarks/bench_prune_time.py --results-dir results/experiments/unstructured_smollm2

`--share-only K` instead times SparseGPT's own work (Hessian hooks + inverse + reconstruction) on
the first K blocks only: per-linear Hessians and sweeps (the reference's cost) vs shared Hessians
vs shared Hessians with q/k/v and gate/up swept as one stacked matrix, in one process, and checks
that all give identical weights (hence equal perplexity): the cheap form of the comparison on a
busy CPU (`--target nm_2_4` for 2:4). With `--reference-dir <checkout of github.com/IST-DASLab/sparsegpt>`
the same table gets the reference code's own cost: its `SparseGPT.add_batch` in a forward hook per
calibration sample and `fasterprune` per linear (its defaults: blocksize 128, percdamp 0.01), on the
same blocks, the same clock, with the share of block 0's weights where its mask and prunebench's agree.
"""

from __future__ import annotations

import argparse
import logging

CELLS = {
    "magnitude": ["method=magnitude"],
    "wanda": ["method=wanda"],
    "sparsegpt (shared Hessians)": ["method=sparsegpt"],
    "sparsegpt (Hessian per linear)": ["method=sparsegpt", "method.params.share_hessians=false"],
    "ria": ["method=ria"],
    "dsnot (wanda)": ["method=dsnot"],
    "besa": ["method=besa"],
}


def selection(args) -> None:
    """Wanda's per-row 50% mask on each LLaMA-3-8B block linear shape: harness.blocks.masks'
    selection (kthvalue + ties in index order) against the references' stable sort, side by side
    in one process, with the masks compared for equality."""
    import time

    import torch

    from harness.blocks.masks import keep_unstructured

    torch.set_num_threads(args.threads)
    shapes = {"q_proj/o_proj": (4096, 4096), "k_proj/v_proj": (1024, 4096), "gate/up_proj": (14336, 4096),
              "down_proj": (4096, 14336)}
    print(f"threads={args.threads}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| linear | shape | stable sort s | selection s | speed-up | masks equal |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        score = torch.randn(shape, generator=g).abs()
        k = shape[1] // 2
        t0 = time.perf_counter()
        ref = torch.ones_like(score, dtype=torch.bool).scatter_(
            1, torch.sort(score, dim=1, stable=True).indices[:, :k], False)
        t_sort = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = keep_unstructured(score, 0.5, "row")
        t_sel = time.perf_counter() - t0
        print(f"| {name} | {shape[0]}x{shape[1]} | {t_sort:.2f} | {t_sel:.2f} | {t_sort / t_sel:.1f}x | "
              f"{torch.equal(got, ref)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results/tmp/bench_prune_time")
    parser.add_argument("--calib", default="c4_quick")
    parser.add_argument("--target", default="unstructured_50")
    parser.add_argument("--eval", default="quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="subset of cell names (substring match)")
    parser.add_argument("--share-only", type=int, metavar="K", help="SparseGPT sharing on K blocks only")
    parser.add_argument("--repeats", type=int, default=3, help="--share-only: runs per variant (best kept)")
    parser.add_argument("--reference-dir", help="--share-only: a checkout of IST-DASLab/sparsegpt, timed alongside")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="--share-only: time with this thread's CPU time (default) or the wall clock")
    parser.add_argument("--selection", action="store_true",
                        help="per-row mask selection vs stable sort on LLaMA-3-8B linear shapes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.selection:
        selection(args)
        return
    if args.share_only:
        share_only(args)
        return

    from harness.config import compose_config
    from harness.run import run_experiment

    rows = []
    for label, overrides in CELLS.items():
        if args.only and not any(o in label for o in args.only):
            continue
        cfg = compose_config([*overrides, f"target={args.target}", f"calib={args.calib}", f"eval={args.eval}",
                              f"runtime.threads={args.threads}", f"paths.results_dir={args.results_dir}"])
        rec = run_experiment(cfg)
        t = rec["prune_report"].get("timing", {})
        ppl = rec["metrics"].get("ppl", {}).get("wikitext2", {}).get("value")
        forward, collect = t.get("forward_s", 0.0), t.get("collect_s", 0.0)
        rows.append((label, rec["status"], t.get("capture_s", 0.0), forward - collect, collect, t.get("method_s", 0.0),
                     rec["timing"].get("prune_s", 0.0), ppl, rec["env"].get("threads"), rec["run_id"]))

    print(f"\nprune time on SmolLM2-135M, calib={args.calib}, target={args.target}, threads={args.threads}"
          f" (seconds; wall clock on a shared CPU)")
    print("| method | status | capture | calibration forwards | statistics hooks | method's own | prune total"
          " | wikitext2 ppl | run_id |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ppl = f"{r[7]:.3f}" if r[7] is not None else ""
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.1f} | {ppl} | {r[9]} |")
    by = {r[0]: r for r in rows}
    a, b = by.get("sparsegpt (shared Hessians)"), by.get("sparsegpt (Hessian per linear)")
    if a and b:
        own_a, own_b = a[4] + a[5], b[4] + b[5]
        print(f"\nSparseGPT own work (Hessian hooks + reconstruction): shared {own_a:.1f} s vs per linear "
              f"{own_b:.1f} s -> ratio {own_a / own_b:.2f} (target <= 0.5); ppl {a[7]} vs {b[7]}")


# --share-only variants: (label, sparsegpt params); the first is the per-linear reference cost
VARIANTS = (("per linear (reference cost)", {"share_hessians": False, "stack_shared": False}),
            ("shared Hessians", {"share_hessians": True, "stack_shared": False}),
            ("shared + stacked sweep", {"share_hessians": True, "stack_shared": True}))


def _first_blocks(args):
    import torch

    from harness.calibration import sample_calibration
    from harness.config import compose_config
    from harness.data import resolve_data_dir
    from harness.env import default_cache_dir
    from harness.models import load_model

    torch.set_num_threads(args.threads)
    cfg = compose_config([f"calib={args.calib}", "model=smollm2-135m"])
    cache = default_cache_dir()
    loaded = load_model(cfg.model.name, dict(cfg.model.source), torch.float32, "cpu", cache)
    c = cfg.calib
    calib = sample_calibration(loaded.tokenizer, c.corpus, c.split, c.n_samples, c.seq_len, c.seed,
                               resolve_data_dir(None))
    return loaded, calib


def _prune_first_blocks(loaded, calib, k: int, target, params: dict):
    """SparseGPT on a copy of the model cut to its first k blocks: (timing, pruned weights)."""
    import copy

    from harness.adapters import adapter_for
    from harness.blocks.allocators import build_allocator
    from harness.blocks.context import PruneContext
    from methods.registry import build_method

    model = copy.deepcopy(loaded.model)
    model.model.layers = model.model.layers[:k]
    adapter = adapter_for(model)
    ctx = PruneContext(adapter=adapter, target=target, calibration=calib, allocator=build_allocator("uniform"),
                       device="cpu")
    t = build_method("sparsegpt", params).prune(model, ctx)["timing"]
    return t, [lin.weight.detach().clone() for b in adapter.blocks(model) for lin in adapter.linears(b).values()]


def _reference_first_blocks(loaded, calib, k: int, target, reference_dir: str, clock):
    """The reference code's own SparseGPT on the first k blocks: `SparseGPT(linear)`, `add_batch` in a
    forward hook for each calibration sample (as its llama.py feeds one sample at a time), then
    `fasterprune` for each linear: (timing, pruned weights). Every block is fed the dense model's
    activations (one forward pass; the reference feeds each block the pruned previous blocks'
    outputs, the same work on other values). Nothing of the reference is copied: its sparsegpt.py
    is imported from `reference_dir`; its `torch.cuda.synchronize()` is a no-op on a CPU-only run."""
    import contextlib
    import copy
    import io
    import sys

    import torch

    from harness.adapters import adapter_for

    sys.path.insert(0, str(reference_dir))
    import sparsegpt as reference   # IST-DASLab/sparsegpt/sparsegpt.py (imports its quant.py)

    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *a, **kw: None
    model = copy.deepcopy(loaded.model)
    model.model.layers = model.model.layers[:k]
    adapter = adapter_for(model)
    linears = [lin for b in adapter.blocks(model) for lin in adapter.linears(b).values()]
    gpts = [reference.SparseGPT(lin) for lin in linears]
    spent = {"hooks": 0.0, "method": 0.0}

    def hook(g):
        def add(_mod, inp, out):
            t0 = clock()
            g.add_batch(inp[0].data, out.data)
            spent["hooks"] += clock() - t0
        return add

    handles = [lin.register_forward_hook(hook(g)) for lin, g in zip(linears, gpts)]
    with torch.no_grad():
        for row in calib.input_ids:                    # [seq_len]: one sample per forward, as the reference
            model(input_ids=row.unsqueeze(0))
    for h in handles:
        h.remove()
    # the reference's prunen is the number pruned in every prunem (its 2:4 run: prunen 2, prunem 4)
    n, m = (target.m - target.n, target.m) if target.n else (0, 0)
    with contextlib.redirect_stdout(io.StringIO()):    # fasterprune prints its time and error
        for g in gpts:
            t0 = clock()
            g.fasterprune(target.ratio, prunen=n, prunem=m, blocksize=128, percdamp=0.01)
            spent["method"] += clock() - t0
    return spent, [lin.weight.detach().clone() for lin in linears]


def share_only(args) -> None:
    """SparseGPT's own work (Hessian hooks + inverse factors + reconstruction) on the first K
    blocks: one Hessian and one sweep per linear (the reference's cost) against shared Hessians,
    and shared Hessians with the linears of a group swept as one stacked matrix, side by side in
    one process, runs interleaved (best of `--repeats`: a busy CPU drifts), with the pruned
    weights compared for identity. `--clock cpu` (the default) times with this thread's CPU time
    instead of the wall clock: with torch on one thread all of the work is on this thread, and
    other jobs on a shared CPU then do not inflate one variant more than another."""
    import time
    import types

    import torch

    import harness.blocks.loop as loop
    from harness.targets import Target

    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu counts this thread only: use it with --threads 1")
    if args.clock == "cpu":   # the loop's timers read perf_counter: make them read thread CPU time
        loop.time = types.SimpleNamespace(perf_counter=time.thread_time)
    loaded, calib = _first_blocks(args)
    target = {"unstructured_50": Target("unstructured_50", "unstructured", 0.5),
              "nm_2_4": Target("nm_2_4", "nm", 0.5, n=2, m=4)}[args.target]
    best: dict[str, dict] = {}
    weights: dict[str, list] = {}
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    reference_label = "reference code (IST-DASLab sparsegpt.py, per linear)"
    for _ in range(args.repeats):
        for label, params in VARIANTS:
            t, weights[label] = _prune_first_blocks(loaded, calib, args.share_only, target, params)
            own = {"hooks": t["collect_s"], "method": t["method_s"], "own": t["collect_s"] + t["method_s"]}
            if label not in best or own["own"] < best[label]["own"]:
                best[label] = own
        if args.reference_dir:
            t, weights[reference_label] = _reference_first_blocks(loaded, calib, args.share_only, target,
                                                                  args.reference_dir, clock)
            own = dict(t, own=t["hooks"] + t["method"])
            if reference_label not in best or own["own"] < best[reference_label]["own"]:
                best[reference_label] = own
    ref = VARIANTS[0][0]
    print(f"SparseGPT own work on the first {args.share_only} blocks of SmolLM2-135M, {args.target}, "
          f"calib={args.calib}, threads={args.threads}, {args.clock} clock, best of {args.repeats}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| variant | Hessian hooks s | inverse + reconstruction s | own work s | / per linear | identical weights |")
    print("|---|---|---|---|---|---|")
    for label, _ in VARIANTS:
        b = best[label]
        same = all(torch.equal(x, y) for x, y in zip(weights[label], weights[ref]))
        print(f"| {label} | {b['hooks']:.2f} | {b['method']:.2f} | {b['own']:.2f} | "
              f"{b['own'] / best[ref]['own']:.2f} | {same} |")
    last = VARIANTS[-1][0]
    if args.reference_dir:
        b = best[reference_label]
        print(f"| {reference_label} | {b['hooks']:.2f} | {b['method']:.2f} | {b['own']:.2f} | "
              f"{b['own'] / best[ref]['own']:.2f} | - |")
        n_block0 = len(weights[last]) // args.share_only
        ours, theirs = weights[last][:n_block0], weights[reference_label][:n_block0]
        agree = sum(int(((x == 0) == (y == 0)).sum()) for x, y in zip(ours, theirs)) / sum(x.numel() for x in ours)
        diff = max(float((x - y).abs().max()) for x, y in zip(ours, theirs))
        print(f"block 0 (same inputs in both): masks agree on {agree:.6f} of the weights, max |w - w_ref| "
              f"{diff:.3g}; own work shared+stacked / reference code = {best[last]['own'] / b['own']:.2f}")
    print(f"own work shared+stacked / per linear = {best[last]['own'] / best[ref]['own']:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
