"""Fine-tune a small encoder classifier from random init on a local task's *train* rows, and save it.

    python -m harness.finetune --family bert --task boolq --out ~/.cache/prunebench/encoders/bert-boolq

No pretrained encoder is available offline, so the encoder is built from random init here and
trained on the train split of harness.tasks (the seeded hash split; the eval rows the accuracy
evaluator scores are never trained on). Its accuracy is modest (no pre-training). The directory
holds the weights (save_pretrained), the tokenizer and `prunebench_finetune.json` (settings, split,
per-epoch training loss). The tokenizer: SmolLM2's BPE from the embedded GGUF (`--tokenizer smollm2`,
the harness' default model) or the byte-level one (`byte`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def load_tokenizer(kind: str, cache_dir: Path):
    from harness.models import _byte_level_tokenizer

    if kind == "byte":
        return _byte_level_tokenizer()
    from transformers import AutoTokenizer

    from harness.config import compose_config
    from harness.models import _verify_source

    source = dict(compose_config([f"model={kind}-135m"]).model.source)
    tok = AutoTokenizer.from_pretrained(_verify_source(source["kind"], source, cache_dir, 0).checkpoint)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_encoder(family: str, tokenizer, args, seed: int):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model(family, vocab_size=len(tokenizer), hidden_size=args.hidden,
                               num_hidden_layers=args.layers, num_attention_heads=args.heads,
                               intermediate_size=args.intermediate, max_position_embeddings=512, num_labels=2,
                               pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)


def train(model, batched, epochs: int, lr: float, seed: int) -> list[dict]:
    """AdamW, linear warmup (10%) and decay; a seeded shuffle of the batches each epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = epochs * len(batched)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(1, 0.1 * total), max(0.0, (total - s) / (0.9 * total))))
    g = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for epoch in range(epochs):
        loss_sum, correct, n, t = 0.0, 0, 0, time.perf_counter()
        for i in torch.randperm(len(batched), generator=g).tolist():
            inputs, labels = batched[i]
            out = model(**inputs, labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            loss_sum += float(out.loss.detach()) * len(labels)
            correct += int((out.logits.argmax(-1) == labels).sum())
            n += len(labels)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n,
                        "s": time.perf_counter() - t})
        print(f"epoch {epoch + 1}/{epochs} loss {loss_sum / n:.4f} train acc {correct / n:.4f}", flush=True)
    model.eval()
    return history


def main(argv=None) -> None:
    from harness.data import resolve_data_dir
    from harness.tasks import batches, task_rows

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="bert", choices=["bert", "roberta", "electra"])
    p.add_argument("--task", default="boolq")
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "byte"])
    for name, default in (("layers", 4), ("hidden", 128), ("heads", 4), ("intermediate", 512), ("epochs", 5),
                          ("max-length", 128), ("batch-size", 32), ("seed", 0), ("split-seed", 0), ("threads", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=str(Path("~/.cache/prunebench").expanduser()))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tok = load_tokenizer(args.tokenizer, Path(args.cache_dir).expanduser())
    rows, sha = task_rows(args.task, "train", resolve_data_dir(args.data_dir), args.holdout, args.split_seed)
    model = build_encoder(args.family, tok, args, args.seed)
    history = train(model, batches(tok, rows, args.max_length, args.batch_size), args.epochs, args.lr, args.seed)
    out = Path(args.out).expanduser()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    meta = {"trained_here_from_random_init": True, "task": args.task, "split": "train", "train_rows": len(rows),
            "holdout": args.holdout, "split_seed": args.split_seed, "data_sha256": sha, "settings": vars(args),
            "history": history, "total_s": time.perf_counter() - t0, "tokenizer": args.tokenizer}
    (out / "prunebench_finetune.json").write_text(json.dumps(meta, indent=1))
    print(f"saved {out} ({sum(p.numel() for p in model.parameters())} parameters, "
          f"{math.fsum(h['s'] for h in history):.0f} s training)")


if __name__ == "__main__":
    main()
