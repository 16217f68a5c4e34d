"""Compresso on tiny GQA LLaMAs: instruction data in the Alpaca format (labels on the response only,
the collaborative prompt in front), the global Lagrangian, masks hardened to exactly the target's
shape, a pruned model that reloads with from_pretrained / load_pruned, exact resume after a kill,
the prompted perplexity, and the run's tags and checkpoint folder."""

from __future__ import annotations

import json

import pytest
import torch

from harness import surgery
from harness.adapters import adapter_for
from harness.blocks.allocators import build_allocator
from harness.blocks.context import PruneContext
from harness.errors import DataError
from harness.instructions import (COLLABORATIVE_SYSTEM, IGNORE, TEMPLATES, arc_to_instruction, format_source,
                                  load_training_windows, read_instruction_jsonl, supervised_windows)
from harness.recovery.train import Preempted
from harness.targets import Target
from methods.compresso import target_shape
from methods.registry import build_method
from tests.conftest import make_tiny

GQA = dict(num_attention_heads=6, num_key_value_heads=2, head_dim=8, hidden_size=48)


def _rows(n=24):
    return [{"instruction": f"Add {i} and {i + 1}.", "input": "" if i % 2 else f"numbers {i}",
             "output": f"{2 * i + 1}"} for i in range(n)]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "ins.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return path


def _ctx(model, tok, tmp_path, ratio=0.3):
    return PruneContext(adapter=adapter_for(model), target=Target("w", "width", ratio), calibration=None,
                        device="cpu", allocator=build_allocator("uniform"), tokenizer=tok, cache_dir=tmp_path,
                        checkpoint_dir=tmp_path / "ckpt")


def _method(jsonl, **kw):
    params = {"corpus": f"instructions:{jsonl}", "template": "alpaca", "seq_len": 256, "steps": 12} | kw
    return build_method("compresso", params)


# ---------------------------------------------------------------------------------------------
# data

def test_sources_follow_the_template_and_the_collaborative_prompt_comes_first():
    with_input, without = _rows(2)[0], _rows(2)[1]
    src = format_source(with_input, "collaborative")
    assert src.startswith(COLLABORATIVE_SYSTEM) and "### Input:\nnumbers 0" in src and src.endswith("### Response:")
    assert "### Input" not in format_source(without, "collaborative")
    assert not format_source(with_input, "alpaca").startswith("###System")
    assert set(TEMPLATES) == {"collaborative", "alpaca"}


def test_labels_are_the_response_only(tiny_llama):
    _, tok = tiny_llama
    rows = _rows(3)
    windows, skipped = supervised_windows(rows, tok, 300, "alpaca")
    assert windows.shape == (3, 2, 300) and skipped == 0
    for row, (ids, labels) in zip(rows, windows):
        src = tok(format_source(row, "alpaca"))["input_ids"]
        tgt = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        scored = labels != IGNORE
        assert ids[: len(src)].tolist() == src
        assert labels[scored].tolist() == tgt                              # exactly the response + EOS
        assert not scored[: len(src)].any() and not scored[len(src) + len(tgt):].any()


def test_rows_without_room_for_a_response_are_skipped(tiny_llama):
    _, tok = tiny_llama
    src_len = len(tok(format_source(_rows(1)[0], "alpaca"))["input_ids"])
    with pytest.raises(DataError, match="no instruction row fits"):
        supervised_windows(_rows(1), tok, src_len, "alpaca")
    _, skipped = supervised_windows(_rows(1) + [dict(_rows(1)[0], instruction="x")], tok, src_len, "alpaca")
    assert skipped == 1


def test_bad_instruction_rows_are_a_data_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "no output"}) + "\n")
    with pytest.raises(DataError, match="instruction and output"):
        read_instruction_jsonl(bad)


def test_arc_dev_becomes_instructions_in_the_cache(data_dir, tmp_path, tiny_llama):
    _, tok = tiny_llama
    data = load_training_windows("instructions:arc_dev", tok, 512, "alpaca", data_dir, tmp_path)
    lines = sum(1 for f in ("ARC-Easy-Dev.jsonl", "ARC-Challenge-Dev.jsonl")
                for line in (data_dir / "arc" / f).read_text().splitlines() if line.strip())
    assert data.info["rows"] == lines and data.info["kind"] == "instructions"
    assert data.windows.shape[0] == lines - data.info["skipped_too_long"]
    assert list((tmp_path / "instructions").glob("arc_dev-*.jsonl"))        # written into the cache only
    item = {"question": {"stem": "Q?", "choices": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]},
            "answerKey": "B"}
    assert arc_to_instruction(item)["output"] == "B. y" and arc_to_instruction(item)["input"] == "A. x\nB. y"


def test_plain_text_corpus_is_packed_behind_the_prompt(data_dir, tmp_path, tiny_llama):
    _, tok = tiny_llama
    data = load_training_windows("c4", tok, 64, "alpaca", data_dir, tmp_path, max_docs=4)
    assert data.info["kind"] == "text" and (data.windows[:, 1] != IGNORE).all()   # no system text in alpaca


# ---------------------------------------------------------------------------------------------
# the constraint

def test_lambdas_ascend_while_the_gap_is_minimised():
    """The masks' descent step lowers the gap; the lambdas' step (the optimizer options compresso gives them) raises
    the constraint."""
    from harness.hard_concrete import Lagrangian, constraint_options

    lag = Lagrangian(("global",))
    s = torch.tensor(0.1, requires_grad=True)
    lag.lambdas["global_1"].data.fill_(0.5)
    assert constraint_options("lagrangian.lambdas.global_1", 0.1) == {"lr": 0.1, "maximize": True}
    assert constraint_options("masks.heads", 0.1) == {"lr": 0.1}
    lag({"global": s}, {"global": 0.3}).backward()
    assert lag.lambdas["global_1"].grad.item() == pytest.approx(0.1 - 0.3)
    assert s.grad.item() == pytest.approx(0.5)
    opt = torch.optim.AdamW([{"params": [p], **constraint_options(f"lagrangian.{n}", 0.1)} for n, p in lag.named_parameters()])
    before = float(lag({"global": torch.tensor(0.1)}, {"global": 0.3}))
    opt.step()
    assert float(lag({"global": torch.tensor(0.1)}, {"global": 0.3})) > before


# ---------------------------------------------------------------------------------------------
# the method end to end on a tiny model

def test_masks_reach_the_target_shape_exactly_and_the_model_reloads(jsonl, tmp_path):
    model, tok = make_tiny("llama", **GQA)
    shape, plan = target_shape(model.config, 0.3, ("heads", "mlp", "hidden"), "query")
    report = _method(jsonl).prune(model, _ctx(model, tok, tmp_path))
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size, cfg.hidden_size) == \
        (shape.heads, shape.kv_heads, shape.intermediate, shape.hidden)
    assert sum(p.numel() for p in model.parameters()) == plan.params_after == surgery.llama_param_count(cfg)
    assert report["target_shape"] == shape.describe()
    assert report["removed"]["mlp_channels_per_block"] == 128 - shape.intermediate   # tiny intermediate_size 128
    assert len(report["removed"]["hidden_channels"]) == GQA["hidden_size"] - shape.hidden
    assert all(len(g) == shape.heads // shape.kv_heads for qs in report["removed"]["query_heads_kept"] for g in qs)
    assert not (tmp_path / "ckpt").exists()                              # checkpoints go when training ends
    x = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).logits
    model.save_pretrained(tmp_path / "out")
    from transformers import AutoModelForCausalLM

    for loaded in (AutoModelForCausalLM.from_pretrained(tmp_path / "out"), surgery.load_pruned(tmp_path / "out")):
        with torch.no_grad():
            assert torch.allclose(loaded.eval()(x).logits, want, atol=1e-5)


@pytest.mark.parametrize("stop_after", [1, 2, 7])   # inside the LoRA-only phase, at its end, with the masks
def test_training_resumes_exactly_after_a_kill(jsonl, tmp_path, stop_after):
    model, tok = make_tiny("llama", **GQA)
    _method(jsonl).prune(model, _ctx(model, tok, tmp_path / "a"))
    want = {k: v.clone() for k, v in model.state_dict().items()}
    model, tok = make_tiny("llama", **GQA)
    with pytest.raises(Preempted):
        _method(jsonl, stop_after=stop_after).prune(model, _ctx(model, tok, tmp_path / "b"))
    assert (tmp_path / "b" / "ckpt").is_dir()
    model, tok = make_tiny("llama", **GQA)                                 # a fresh process: reload, rerun
    report = _method(jsonl).prune(model, _ctx(model, tok, tmp_path / "b"))
    got = model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    resumed = [report["training"]["finetune"]["resumed_from_step"], report["training"]["prune"]["resumed_from_step"]]
    assert resumed != [None, None]


def test_the_constraint_moves_the_expected_sparsity_towards_the_target(jsonl, tmp_path):
    model, tok = make_tiny("llama", **GQA)
    report = _method(jsonl, steps=24, reg_lr=0.3).prune(model, _ctx(model, tok, tmp_path))
    c = report["constraint"]
    assert 0 < c["target_block_sparsity"] < 1
    assert c["expected_block_sparsity_end"] > 0.05                       # gates closed from ~0 at init
    assert c["lambda_1"] != 0


# ---------------------------------------------------------------------------------------------
# evaluation, tags, checkpoints

def test_prompted_perplexity_scores_the_same_windows_behind_the_prompt(tiny_llama):
    from harness.evaluation.ppl import window_nll
    from harness.evaluation.ppl_prompted import prompted_nll

    model, _ = tiny_llama
    windows = torch.randint(0, model.config.vocab_size, (3, 32), generator=torch.Generator().manual_seed(0))
    empty = torch.zeros(0, dtype=torch.int64)
    assert prompted_nll(model, windows, empty, 2, "cpu") == pytest.approx(window_nll(model, windows, 2, "cpu", False))
    prefix = torch.randint(0, model.config.vocab_size, (5,), generator=torch.Generator().manual_seed(1))
    nll, count = prompted_nll(model, windows, prefix, 1, "cpu")
    full = torch.cat([prefix.expand(3, 5), windows], 1)
    with torch.no_grad():
        logits = model(full).logits[:, 5:-1]
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1),
                                               reduction="sum")
    assert count == 3 * 31 and nll == pytest.approx(float(manual), rel=1e-5)


def test_a_run_without_recovery_is_tagged_with_the_methods_own_training():
    from methods.tags import run_tags

    m = build_method("compresso")
    tags = run_tags(m.tags, "width", "none", True, False, m.own_training)
    assert (tags["retrain"], tags["data"], tags["weights"]) == ("Efficient-LoRA", "Small", "Update")
    assert run_tags(m.tags, "width", "none", True, False)["retrain"] == "Without"   # other methods unchanged


def test_the_checkpoint_folder_ignores_stop_after(tmp_path):
    from harness.validate import prune_checkpoint_dir

    base = {"method": {"name": "compresso", "params": {"steps": 12}}, "paths": {"checkpoint_dir": str(tmp_path)}}
    stopped = dict(base, method={"name": "compresso", "params": {"steps": 12, "stop_after": 3}})
    assert prune_checkpoint_dir(base, tmp_path, {}) == prune_checkpoint_dir(stopped, tmp_path, {})
    assert prune_checkpoint_dir(base, tmp_path, {}).parent == tmp_path
    assert prune_checkpoint_dir({"method": {"name": "wanda"}}, tmp_path, {}) is None
