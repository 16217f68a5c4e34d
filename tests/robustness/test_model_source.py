"""Model sources: configured sha256 verified (GGUF and local), pickles refused, corrupt weights fail
at the load stage with a failed record."""

from __future__ import annotations

from harness.hashing import sha256_file
from harness.run import run_experiment
from tests.conftest import make_tiny
from tests.robustness.conftest import config_error, tiny

ZERO = "0" * 64


def _local(tmp_path, sha=None, *extra):
    model, tok = make_tiny("llama")
    out = tmp_path / "model"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    over = [f"++model.source={{kind: local, path: '{out}'}}", "model.name=tiny-local"]
    if sha:
        over[0] = f"++model.source={{kind: local, path: '{out}', sha256: '{sha}'}}"
    return out, tiny(tmp_path, *over, *extra)


def test_local_model_sha256_mismatch_fails_at_load(tmp_path):
    out, cfg = _local(tmp_path, ZERO)
    rec = run_experiment(cfg)
    assert rec["status"] == "failed" and rec["error"]["stage"] == "load"
    assert rec["error"]["type"] == "ModelSourceError"
    assert rec["error"]["message"].startswith(f"sha256 mismatch for {out}: expected {ZERO}, got ")
    assert rec["metrics"] == {}


def test_local_model_sha256_of_the_file_is_accepted(tmp_path):
    out = tmp_path / "model"
    _, cfg = _local(tmp_path)
    sha = sha256_file(out / "model.safetensors")
    _, cfg = _local(tmp_path / "again", sha)
    rec = run_experiment(cfg)
    assert rec["status"] == "ok", rec["error"]


def test_pickle_checkpoint_is_refused(tmp_path):
    import torch

    model, _ = make_tiny("llama")
    out = tmp_path / "pickled"
    out.mkdir()
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    msg = config_error(tiny(tmp_path, f"++model.source={{kind: local, path: '{out}'}}"))
    assert msg == f"{out} has only pickle checkpoints (pytorch_model.bin); set model.allow_pickle=true to load pickles"


def test_gguf_sha256_mismatch_fails_at_load(tmp_path):
    rec = run_experiment(tiny(tmp_path, "model=smollm2-135m", f"model.source.sha256={ZERO}"))
    assert rec["status"] == "failed" and rec["error"]["stage"] == "load"
    assert rec["error"]["message"].startswith("sha256 mismatch for ") and f"expected {ZERO}" in rec["error"]["message"]


def test_corrupt_gguf_fails_at_load(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 1000)
    rec = run_experiment(tiny(tmp_path, f"++model.source={{kind: gguf, path: '{bad}'}}"))
    assert rec["status"] == "failed" and rec["error"]["stage"] == "load" and rec["metrics"] == {}


def test_missing_gguf_is_one_line(tmp_path):
    msg = config_error(tiny(tmp_path, f"++model.source={{kind: gguf, path: '{tmp_path / 'none.gguf'}'}}"))
    assert msg == f"GGUF file not found: {tmp_path / 'none.gguf'}"
