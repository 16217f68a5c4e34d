"""C4 perplexity is cut where the references cut it: get_c4 in locuslab/wanda and
IST-DASLab/sparsegpt keeps the first 1100 validation documents, joined by spaces, and then only
the first 256 * seq_len tokens (`valenc[:, :(256 * seqlen)]`); WikiText-2 is not cut."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from harness.data import eval_text
from harness.evaluation.ppl import evaluate
from tests.conftest import make_tiny


def test_c4_is_cut_at_256_windows(data_dir):
    model, tok = make_tiny("llama")
    seq_len = 8
    text, _ = eval_text("c4", None, data_dir)
    all_ids = tok(text, return_tensors="pt")["input_ids"][0]
    assert all_ids.numel() > 300 * seq_len                      # the uncut text has more windows
    out = evaluate(model, tok, {"datasets": ["c4"], "seq_len": seq_len},
                   SimpleNamespace(data_dir=data_dir, device="cpu")).values["c4"]
    assert out["n_windows"] == 256 and out["protocol_windows"] == 256
    # the windows are the first 256 * seq_len tokens of the joined text
    ids = all_ids[: 256 * seq_len]
    from harness.hashing import sha256_tokens
    assert out["tokens_sha256"] == sha256_tokens(ids.reshape(256, seq_len))


def test_quick_preset_still_cuts_further(data_dir):
    model, tok = make_tiny("llama")
    out = evaluate(model, tok, {"datasets": ["c4"], "seq_len": 8, "max_windows": 4},
                   SimpleNamespace(data_dir=data_dir, device="cpu")).values["c4"]
    assert out["n_windows"] == 4 and out["max_windows"] == 4
    assert torch.isfinite(torch.tensor(out["value"]))
