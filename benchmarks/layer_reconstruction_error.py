"""Why SparseGPT is not better than Wanda on SmolLM2 at c4_quick: layer reconstruction error of
both methods on the calibration tokens (what SparseGPT fits) and on held-out C4 tokens.

For a few blocks of the *dense* model, the inputs of each input group are captured for a
calibration draw (seed 0) and a held-out draw (seed 1, same size); each linear is pruned at 50%
by SparseGPT (Hessian of the calibration draw) and by Wanda (norms of the calibration draw), and
the relative error ||X (W - W_p)^T||^2 / ||X W^T||^2 is printed on both draws.

    PYTHONPATH=$PWD python benchmarks/layer_reconstruction_error.py --blocks 2 15 28 --n 16
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, nargs="+", default=[2, 15, 28])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from harness.adapters import adapter_for
    from harness.blocks.capture import capture_block_inputs, run_block
    from harness.blocks.masks import keep_unstructured
    from harness.calibration import sample_calibration
    from harness.config import compose_config
    from harness.data import resolve_data_dir
    from harness.env import default_cache_dir
    from harness.models import load_model
    from methods.sparsegpt import inverse_hessian_factor, sparsegpt_prune
    from methods.wanda import wanda_score

    cfg = compose_config(["model=smollm2-135m"])
    loaded = load_model(cfg.model.name, dict(cfg.model.source), torch.float32, "cpu",
                        default_cache_dir())
    model, tok = loaded.model, loaded.tokenizer
    adapter = adapter_for(model)
    data = resolve_data_dir(None)
    draws = {s: sample_calibration(tok, "c4", "train", args.n, args.seq, s, data).input_ids for s in (0, 1)}
    inputs = {s: capture_block_inputs(model, adapter, ids, 1, "cpu") for s, ids in draws.items()}
    print("| block | linear | SparseGPT err (calib) | Wanda err (calib) | SparseGPT err (held-out) | Wanda err (held-out) |")
    print("|---|---|---|---|---|---|")
    for i, block in enumerate(adapter.blocks(model)):
        if i > max(args.blocks):
            break
        if i in args.blocks:
            lins = adapter.linears(block)
            acts: dict = {s: {} for s in draws}
            for s in draws:
                hooks = []
                for group in adapter.input_groups(block):
                    def hook(_m, a, _o, g=group, s=s):
                        acts[s].setdefault(g, []).append(a[0].reshape(-1, a[0].shape[-1]))
                    hooks.append(lins[group[0]].register_forward_hook(hook))
                run_block(block, adapter, inputs[s])
                for h in hooks:
                    h.remove()
            for group in adapter.input_groups(block):
                xc, xh = torch.cat(acts[0][group]), torch.cat(acts[1][group])       # [tokens, in]
                hess = 2 * xc.t() @ xc / args.n
                hinv = inverse_hessian_factor(hess, 0.01)
                norm = (xc.pow(2).sum(0) / args.n).sqrt()
                for name in group:
                    w = lins[name].weight.detach().float()
                    sg = sparsegpt_prune(w, hinv, 0.5)
                    wd = w * keep_unstructured(wanda_score(w, norm), 0.5, "row")
                    err = lambda x, wp: float((x @ (w - wp).t()).pow(2).sum() / (x @ w.t()).pow(2).sum())
                    print(f"| {i} | {name} | {err(xc, sg):.4f} | {err(xc, wd):.4f} | {err(xh, sg):.4f} | {err(xh, wd):.4f} |",
                          flush=True)
        with torch.no_grad():
            for s in draws:
                inputs[s] = inputs[s].replace(run_block(block, adapter, inputs[s]))


if __name__ == "__main__":
    main()
