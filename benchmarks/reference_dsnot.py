"""DSnoT against its reference code: the reference's own `prune_DSnoT` run inside prunebench's pipeline.

    python benchmarks/reference_dsnot.py --reference-dir <checkout of github.com/zyxxmu/DSnoT> \\
        [--results-dir /tmp/dsnot-vs-reference] [hydra overrides, e.g. calib=c4_medium]

Three cells with the same config (default: SmolLM2, `target=unstructured_60`), each saving its
pruned model: prunebench's `method=dsnot`, prunebench's `method=wanda` (DSnoT's base), and the
reference's `lib/prune.py: prune_DSnoT` called with its default run (the README command:
initial_method wanda, max_cycle_time 50, update_threshold 0.1, pow_of_var_regrowing 1; main.py's
skip_layer mlp, without_same_sign True) in place of prunebench's prune stage. Loading, the
calibration draw and the evaluation are prunebench's in all three, so the reference cell has the
same run id and the same calibration tokens (sha256 in each record) and only the pruning differs.
Prints each cell's perplexity and the share of block-linear weights on which the reference's mask
and prunebench's agree.

The reference is written for transformers 4.3x, where a LLaMA decoder layer computed its rotary
embeddings from `position_ids`; since transformers 4.48 the model computes them once and passes
`position_embeddings`. The reference calls its layers with `position_ids` only, so this script
supplies the embeddings computed for the calibration length (LLaMA-family models only). Nothing of
the reference is copied here: its checkout is imported from `--reference-dir`.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# the reference's default run (README command + main.py defaults)
REFERENCE_DEFAULTS = dict(seed=0, initial_method="wanda", max_cycle_time=50, update_threshold=0.1,
                          pow_of_var_regrowing=1.0, pow_of_var_pruning=1.0, skip_layer="mlp",
                          skip_sub_layer="no_skip", without_same_sign=True, get_time_overhead=False,
                          without_DSnoT=False)


def _install_reference(reference_dir: Path):
    """Import the reference's lib/prune.py and adapt its layer calls to transformers >= 4.48."""
    import torch
    from transformers.models.llama import modeling_llama

    sys.path.insert(0, str(reference_dir))
    import lib.prune as ref   # the reference's module, from its checkout

    rotary: dict = {}
    layer_forward = modeling_llama.LlamaDecoderLayer.forward

    def forward(self, hidden_states, *args, position_embeddings=None, **kwargs):
        if position_embeddings is None:         # a call from the reference's loop
            position_embeddings = rotary["cos_sin"]
        return layer_forward(self, hidden_states, *args, position_embeddings=position_embeddings, **kwargs)

    prepare = ref.prepare_calibration_input

    def prepare_with_rotary(args, model, dataloader, device):
        positions = torch.arange(model.seqlen, device=device).unsqueeze(0)           # [1, seq]
        probe = torch.zeros(1, model.seqlen, model.config.hidden_size, device=device)
        rotary["cos_sin"] = model.model.rotary_emb(probe, positions)                  # ([1, seq, hd] x 2)
        inps, outs, mask, position_ids = prepare(args, model, dataloader, device)
        return inps, outs, mask, positions if position_ids is None else position_ids

    modeling_llama.LlamaDecoderLayer.forward = forward
    ref.prepare_calibration_input = prepare_with_rotary
    return ref


def _reference_prune(ref):
    """A prune stage that hands the loaded model and prunebench's calibration tokens to prune_DSnoT."""
    import torch

    def prune(self, model, ctx) -> dict:
        tokens = ctx.calibration.input_ids                                           # [n, seq]
        args = types.SimpleNamespace(**REFERENCE_DEFAULTS, nsamples=tokens.shape[0],
                                     sparsity_ratio=ctx.target.ratio)
        model.seqlen = tokens.shape[1]
        model.hf_device_map = {}                 # the reference reads it (multi-GPU placement)
        # its loader draws C4 itself; hand it prunebench's draw instead (same tokens as the other cells)
        ref.get_loaders = lambda *a, **k: ([(tokens[i:i + 1], None) for i in range(tokens.shape[0])], None)
        ref.prune_DSnoT(args, model, None, torch.device(ctx.device), prune_n=0, prune_m=0)
        return {"reference_run": "zyxxmu/DSnoT lib/prune.py:prune_DSnoT (default run)"}

    return prune


def _masks(model_dir: Path) -> dict:
    """{name: zero mask} of every block linear of a saved model, read tensor by tensor."""
    from harness.offload import SafetensorsStore

    store = SafetensorsStore.from_dir(model_dir)
    return {n: store.read(n) == 0 for n in store.names() if ".layers." in n and n.endswith("proj.weight")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-dir", required=True, help="a checkout of github.com/zyxxmu/DSnoT")
    ap.add_argument("--results-dir", default="/tmp/dsnot-vs-reference")
    ap.add_argument("overrides", nargs="*", help="hydra overrides for all three cells")
    a = ap.parse_args()
    reference_dir = Path(a.reference_dir).resolve()
    if not (reference_dir / "lib" / "prune.py").is_file():
        raise SystemExit(f"{reference_dir} is not a DSnoT checkout (no lib/prune.py)")
    sys.path.insert(0, str(REPO))
    from harness.config import compose_config
    from harness.run import run_experiment

    base = ["target=unstructured_60", "output.save_model=true", *a.overrides]
    cells = {}
    for label, method in (("prunebench dsnot", "dsnot"), ("prunebench wanda", "wanda")):
        cells[label] = run_experiment(compose_config([*base, f"method={method}",
                                                      f"paths.results_dir={a.results_dir}/prunebench"]))
    import methods.dsnot

    methods.dsnot.DSnoT.prune = _reference_prune(_install_reference(reference_dir))
    cells["reference dsnot"] = run_experiment(compose_config([*base, "method=dsnot",
                                                              f"paths.results_dir={a.results_dir}/reference"]))
    print("| cell | status | run_id | WikiText-2 ppl | block sparsity | calibration tokens sha256 |")
    print("|---|---|---|---|---|---|")
    for label, rec in cells.items():
        ppl = ((rec.get("metrics") or {}).get("ppl") or {}).get("wikitext2", {}).get("value")
        print(f"| {label} | {rec['status']} | {rec['run_id']} | {ppl} | "
              f"{(rec.get('measured') or {}).get('sparsity_blocks')} | "
              f"{((rec.get('calibration') or {}).get('tokens_sha256') or '')[:16]} |")
    dirs = {k: Path(a.results_dir) / ("reference" if k.startswith("reference") else "prunebench") / "models" /
            r["run_id"] for k, r in cells.items()}
    ref_masks, pb_masks, wanda_masks = (_masks(dirs[k]) for k in ("reference dsnot", "prunebench dsnot",
                                                                  "prunebench wanda"))
    total = sum(m.numel() for m in ref_masks.values())
    agree = sum(int((ref_masks[k] == pb_masks[k]).sum()) for k in ref_masks)
    moved = sum(int((ref_masks[k] != wanda_masks[k]).sum()) for k in ref_masks)
    print(f"\nmasks: prunebench dsnot == reference dsnot on {agree / total:.6%} of {total} block-linear weights;"
          f" the reference's swaps moved {moved / total:.4%} of them away from the Wanda mask")
    first = [k for k in ref_masks if not bool((ref_masks[k] == pb_masks[k]).all())]
    if first:
        print(f"first differing linear: {first[0]} ({len(first)} of {len(ref_masks)} differ)")


if __name__ == "__main__":
    main()
