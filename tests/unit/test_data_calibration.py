import random

import pytest
import torch

from harness.calibration import sample_calibration
from harness.data import DataError, eval_text, load_rows, resolve_data_dir
from harness.hashing import sha256_tokens
from harness.models import _byte_level_tokenizer


def test_wikitext_rows_match_the_hf_split(data_dir):
    rows = load_rows("wikitext2", "test", data_dir)
    assert len(rows.rows) == 4358  # the HF wikitext-2-raw-v1 test split
    assert rows.rows[0] == "" and rows.rows[1] == " = Robert Boulter = \n"
    assert rows.sha256 == "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"
    text, _ = eval_text("wikitext2", None, data_dir)
    assert text.startswith("\n\n = Robert Boulter = \n\n\n")


def test_c4_eval_is_flagged_as_a_prefix_variant(data_dir):
    _, rows = eval_text("c4", None, data_dir)
    assert rows.split == "validation" and rows.variant == "first1025docs"
    assert len(load_rows("ptb", "test", data_dir).rows) == 3761


def _reference_windows(rows, tokenizer, nsamples, seqlen, seed):
    """Transcription of the SparseGPT/Wanda `get_c4` sampling loop (the behaviour we must match)."""
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(rows) - 1)
            enc = tokenizer(rows[i], return_tensors="pt")
            if enc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, enc.input_ids.shape[1] - seqlen - 1)
        out.append(enc.input_ids[:, i:i + seqlen])
    return torch.cat(out)


def test_calibration_draw_equals_the_reference_loop(data_dir):
    tok = _byte_level_tokenizer()
    calib = sample_calibration(tok, "c4", "train", 6, 300, 0, data_dir)
    rows = load_rows("c4", "train", data_dir).rows
    assert torch.equal(calib.input_ids, _reference_windows(rows, tok, 6, 300, 0))
    assert calib.input_ids.shape == (6, 300)
    assert calib.tokens_sha256 == sha256_tokens(calib.input_ids)
    other = sample_calibration(tok, "c4", "train", 6, 300, 1, data_dir)
    assert other.tokens_sha256 != calib.tokens_sha256


def test_stream_mode_and_bad_inputs(data_dir):
    tok = _byte_level_tokenizer()
    calib = sample_calibration(tok, "wikitext2", "validation", 3, 64, 0, data_dir, mode="stream")
    assert calib.input_ids.shape == (3, 64)
    with pytest.raises(DataError, match="unknown corpus"):
        load_rows("wiki103", "test", data_dir)
    with pytest.raises(DataError, match="no split"):
        load_rows("ptb", "train", data_dir)
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir("/nonexistent/data")
