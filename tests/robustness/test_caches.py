"""Caches (dequantized GGUF weights, calibration tokens, block inputs) are verified on use: a
tampered entry is dropped and rebuilt, never turned into a number; reproduce does not read them."""

from __future__ import annotations

import shutil

import pytest
import torch

from harness.run import run_experiment
from tests.robustness.conftest import tiny

WANDA = ("method=wanda", "target=unstructured_50")


def _ppl(rec):
    return rec["metrics"]["ppl"]["wikitext2"]["value"]


def test_tampered_calibration_cache_is_rebuilt(tmp_path):
    first = run_experiment(tiny(tmp_path, *WANDA))
    assert first["status"] == "ok" and not first["calibration"]["reused"]
    [entry] = (tmp_path / "cache" / "calibration").glob("*.pt")
    ids = torch.load(entry, weights_only=True)
    ids[0, 0] = (ids[0, 0] + 1) % 256                  # one token id changed, file still loads
    torch.save(ids, entry)
    again = run_experiment(tiny(tmp_path, *WANDA, "force=true"))
    assert again["status"] == "ok" and not again["calibration"]["reused"]
    assert again["calibration"]["tokens_sha256"] == first["calibration"]["tokens_sha256"]
    assert _ppl(again) == _ppl(first)
    third = run_experiment(tiny(tmp_path, *WANDA, "force=true"))   # the rebuilt entry is used again
    assert third["calibration"]["reused"] and _ppl(third) == _ppl(first)


def test_tampered_block_input_cache_is_rebuilt(tmp_path):
    first = run_experiment(tiny(tmp_path, *WANDA))
    [entry] = (tmp_path / "cache" / "blocks").glob("*/block0_inputs.pt")
    obj = torch.load(entry, weights_only=True)
    obj["hidden"][0] += 1.0                              # every block-0 input moved
    torch.save(obj, entry)
    again = run_experiment(tiny(tmp_path, *WANDA, "force=true"))
    assert again["status"] == "ok" and _ppl(again) == _ppl(first)
    assert again["measured"] == first["measured"]


def test_reproduce_does_not_trust_the_caches_it_checks(tmp_path):
    from harness.records import record_path
    from harness.reproduce import reproduce

    first = run_experiment(tiny(tmp_path, *WANDA))
    [entry] = (tmp_path / "cache" / "calibration").glob("*.pt")
    ids = torch.load(entry, weights_only=True)
    ids[:, :8] = 7
    torch.save(ids, entry)
    shutil.copy(entry, entry.with_name(entry.name + ".copy"))
    # even a cache entry whose digest was forged to match is not read by reproduce
    from harness.digests import write_file_digest

    write_file_digest(entry)
    report = reproduce(record_path(tmp_path / "results", first["run_id"]))
    assert report.reproduced, [(r.key, r.recorded, r.reproduced) for r in report.mismatches]
    assert not report.new_record["calibration"]["reused"]


@pytest.mark.slow
def test_tampered_dequantized_gguf_cache_is_rebuilt(tmp_path, cache_dir):
    """4 KB of the shard holding a cached q_proj overwritten: the next load verifies the float copy,
    drops and rebuilds it, and gives the weights of the verified GGUF (the shard's bytes restored)."""
    import json

    from harness.config import compose_config
    from harness.digests import verify_dir
    from harness.hashing import sha256_file, sha256_state_dict
    from harness.models import load_model

    source = dict(compose_config(["model=smollm2-135m"]).model.source)
    ref = load_model("smollm2-135m", source, torch.float32, "cpu", cache_dir)   # builds or verifies
    ref_sha = sha256_state_dict(ref.model.state_dict())
    entry = f"gguf-{ref.sha256[:16]}"
    del ref
    mine = tmp_path / "cache"
    shutil.copytree(cache_dir / "models" / entry, mine / "models" / entry)
    copy = mine / "models" / entry
    index = copy / "model.safetensors.index.json"   # sharded cache; a single-file one from before
    shard = (json.loads(index.read_text())["weight_map"]["model.layers.7.self_attn.q_proj.weight"]
             if index.is_file() else "model.safetensors")
    st = copy / shard
    original = sha256_file(st)
    with open(st, "r+b") as f:
        f.seek(st.stat().st_size // 2)
        f.write(b"\x7f" * 4096)
    assert not verify_dir(copy)
    again = load_model("smollm2-135m", source, torch.float32, "cpu", mine)
    assert not again.cache_hit and verify_dir(copy)
    if index.is_file():   # rebuilt in the layout it had: the tampered shard's bytes are back
        assert sha256_file(st) == original
    assert sha256_state_dict(again.model.state_dict()) == ref_sha
