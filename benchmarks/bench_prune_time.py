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
the first K blocks only, shared vs per-linear Hessians, in one process, and checks that both give
identical weights (hence equal perplexity): the cheap form of the comparison on a busy CPU.
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
    parser.add_argument("--stack-only", type=int, metavar="K",
                        help="SparseGPT stacked q/k/v and gate/up reconstruction vs per linear, K blocks")
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
    if args.stack_only:
        stack_only(args)
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


def share_only(args) -> None:
    import copy

    import torch

    from harness.adapters import adapter_for
    from harness.blocks.allocators import build_allocator
    from harness.blocks.context import PruneContext
    from harness.calibration import sample_calibration
    from harness.config import compose_config
    from harness.data import resolve_data_dir
    from harness.env import default_cache_dir
    from harness.models import load_model
    from harness.targets import Target
    from methods.registry import build_method

    torch.set_num_threads(args.threads)
    cfg = compose_config([f"calib={args.calib}", "model=smollm2-135m"])
    loaded = load_model(cfg.model.name, dict(cfg.model.source), torch.float32, "cpu", default_cache_dir())
    c = cfg.calib
    calib = sample_calibration(loaded.tokenizer, c.corpus, c.split, c.n_samples, c.seq_len, c.seed, resolve_data_dir(None))
    results = {}
    for share in (True, False):
        model = copy.deepcopy(loaded.model)
        model.model.layers = model.model.layers[:args.share_only]      # first K blocks only
        adapter = adapter_for(model)
        ctx = PruneContext(adapter=adapter, target=Target("unstructured_50", "unstructured", 0.5),
                           calibration=calib, allocator=build_allocator("uniform"), device="cpu")
        t = build_method("sparsegpt", {"share_hessians": share}).prune(model, ctx)["timing"]
        weights = [lin.weight.detach().clone() for b in adapter.blocks(model) for lin in adapter.linears(b).values()]
        results[share] = (t, weights)
        print(f"share_hessians={share}: statistics hooks {t['collect_s']:.1f} s, method {t['method_s']:.1f} s, "
              f"own work {t['collect_s'] + t['method_s']:.1f} s, calibration forwards "
              f"{t['forward_s'] - t['collect_s']:.1f} s", flush=True)
    same = all(torch.equal(a, b) for a, b in zip(results[True][1], results[False][1]))
    own = {k: v[0]["collect_s"] + v[0]["method_s"] for k, v in results.items()}
    print(f"first {args.share_only} blocks: own work shared/per-linear = {own[True] / own[False]:.2f} "
          f"(target <= 0.5); identical pruned weights: {same}")


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


def stack_only(args) -> None:
    """SparseGPT's method time (inverse factors + reconstruction) with the linears sharing an input
    stacked into one column sweep (stack_shared=true) against one sweep per linear, side by side
    in one process on the first K blocks of SmolLM2, and whether both give identical weights."""
    import copy

    import torch

    from harness.adapters import adapter_for
    from harness.blocks.allocators import build_allocator
    from harness.blocks.context import PruneContext
    from harness.targets import Target
    from methods.registry import build_method

    loaded, calib = _first_blocks(args)
    targets = {"unstructured_50": Target("unstructured_50", "unstructured", 0.5),
               "nm_2_4": Target("nm_2_4", "nm", 0.5, n=2, m=4)}
    for tname, target in targets.items():
        results = {}
        for stack in (False, True, False, True):   # interleaved: a busy CPU drifts
            model = copy.deepcopy(loaded.model)
            model.model.layers = model.model.layers[:args.stack_only]
            adapter = adapter_for(model)
            ctx = PruneContext(adapter=adapter, target=target, calibration=calib,
                               allocator=build_allocator("uniform"), device="cpu")
            t = build_method("sparsegpt", {"stack_shared": stack}).prune(model, ctx)["timing"]
            weights = [lin.weight.detach().clone() for b in adapter.blocks(model)
                       for lin in adapter.linears(b).values()]
            prev = results.get(stack)
            results[stack] = (min(t["method_s"], prev[0]) if prev else t["method_s"], weights)
        a, b = results[True][1], results[False][1]
        same = all(torch.equal(x, y) for x, y in zip(a, b))
        masks = all(torch.equal(x == 0, y == 0) for x, y in zip(a, b))
        diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
        print(f"{tname}, first {args.stack_only} blocks, threads={args.threads}: method time stacked "
              f"{results[True][0]:.2f} s vs per linear {results[False][0]:.2f} s -> ratio "
              f"{results[True][0] / results[False][0]:.2f}; identical weights: {same}; identical masks: {masks}; "
              f"max |diff| {diff:.3g}", flush=True)


if __name__ == "__main__":
    main()
