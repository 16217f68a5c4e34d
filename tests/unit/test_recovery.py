"""Recovery axis on tiny models: each type lowers the loss, sparsity survives, resume is exact."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.context import PruneContext
from harness.recovery import get_recovery
from harness.recovery.context import RecoveryContext
from harness.recovery.train import Preempted
from harness.targets import Target
from harness.validate import ConfigError, validate
from tests.conftest import make_tiny

BUDGET = dict(steps=12, batch_size=2, seq_len=32, lr=1e-2, warmup_steps=0, schedule="constant",
              heldout_docs=8, heldout_windows=4, checkpoint_every=0, max_docs=40, seed=0)


def _ctx(model, data_dir, tmp_path=None, teacher_factory=None, report=None):
    prune = PruneContext(adapter=adapter_for(model), target=Target.from_config({"name": "none", "pattern": "none"}),
                         calibration=None, allocator=None, device="cpu")
    return RecoveryContext(prune=prune, run_id="test", device="cpu", dtype=torch.float32, data_dir=data_dir,
                           prune_report=report or {},
                           checkpoint_dir=tmp_path, eval_texts=[("wikitext2", "test")],
                           teacher_factory=teacher_factory)


@torch.no_grad()
def _prune_half(model):
    """Magnitude 50% per block linear: enough to give masks to preserve."""
    adapter = adapter_for(model)
    for block in adapter.blocks(model):
        for lin in adapter.linears(block).values():
            w = lin.weight
            thresh = w.abs().flatten().kthvalue(w.numel() // 2).values
            w.mul_(w.abs() > thresh)
    return model


def _zero_patterns(model):
    adapter = adapter_for(model)
    return [lin.weight == 0 for b in adapter.blocks(model) for lin in adapter.linears(b).values()]


@pytest.mark.parametrize("name,extra", [("lora", {"r": 4}), ("partial", {"last_k": 2}),
                                        ("kd", {"trainable": "all", "lr": 3e-4})])
def test_recovery_lowers_loss_and_keeps_zeros(name, extra, data_dir):
    model = _prune_half(make_tiny("llama")[0])
    _, tok = make_tiny("llama")
    zeros = _zero_patterns(model)
    teacher = lambda: make_tiny("llama")  # noqa: E731 - the dense model the pruned one came from
    report = get_recovery(name)(model, tok, BUDGET | extra | {"name": name},
                                _ctx(model, data_dir, teacher_factory=teacher))
    if name == "kd":  # a random-init teacher: the objective is matching it, not lowering the LM loss
        assert report["heldout_kd_loss_after"] < report["heldout_kd_loss_before"]
    else:
        assert report["train_loss_last"] < report["train_loss_first"]
        assert report["heldout_loss_after"] < report["heldout_loss_before"]
    after = _zero_patterns(model)
    assert all(torch.equal(a, z) for a, z in zip(after, zeros)), "pruned weights must stay exactly zero"
    assert report["sparsity_blocks_after"] == report["sparsity_blocks_before"] == pytest.approx(0.5, abs=0.01)
    assert not any(p.requires_grad for p in model.parameters())


def test_kd_teacher_correction(data_dir):
    model = _prune_half(make_tiny("llama")[0])
    _, tok = make_tiny("llama")
    params = BUDGET | {"name": "kd", "steps": 4, "teacher_correction_steps": 6, "teacher_correction_lr": 1e-2,
                       "ce_weight": 0.5, "temperature": 2.0}
    report = get_recovery("kd")(model, tok, params, _ctx(model, data_dir, teacher_factory=lambda: make_tiny("llama")))
    teacher = report["kd"]["teacher"]
    assert teacher["heldout_loss_corrected"] < teacher["heldout_loss"]
    assert report["heldout_kd_loss_after"] < report["heldout_kd_loss_before"]


def _dense_with_span(removed):
    def dense():  # random init barely moves the residual stream: make the removed span matter
        model, tok = make_tiny("llama", num_hidden_layers=6)
        with torch.no_grad():
            for i in removed:
                model.model.layers[i].mlp.down_proj.weight.mul_(20)
        return model, tok
    return dense


@pytest.mark.parametrize("module", ["layer", "linear", "ffn"])
def test_replace_stands_in_for_removed_span(module, data_dir):
    from harness.surgery import drop_blocks

    removed = [2, 3]
    dense = _dense_with_span(removed)
    model, tok = dense()
    drop_blocks(model, adapter_for(model), removed)
    n_params = sum(p.numel() for p in model.parameters())
    teacher = dense()[0]
    x = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = (model(input_ids=x).logits - teacher(input_ids=x).logits).pow(2).mean()
    # a pretrained-initialised full layer diverges at the variants' 3e-3 (held-out loss rises)
    params = BUDGET | {"name": "replace", "module": module, "lr": 5e-4 if module == "layer" else 3e-3, "steps": 16}
    ctx = _ctx(model, data_dir, teacher_factory=dense,
               report={"removed": {"unit": "block", "indices": removed, "count": 2, "of": 6}})
    report = get_recovery("replace")(model, tok, params, ctx)
    rep = report["replace"]
    assert rep["spans"] == [[2, 4]]
    assert rep["heldout_hidden_loss_after"] < rep["heldout_hidden_loss_before"]
    # A random teacher is no better at language modelling, so the check is closeness to it.
    with torch.no_grad():
        after = (model(input_ids=x).logits - teacher(input_ids=x).logits).pow(2).mean()
    assert after < before
    assert sum(p.numel() for p in model.parameters()) == n_params + rep["params_added"]
    # the reference's layer is a real block where the span was; the variants ride on a kept block
    assert len(model.model.layers) == (5 if module == "layer" else 4)


def test_replace_default_is_the_first_pruned_layer_trained_in_place(data_dir, tmp_path):
    """LLM-Streamline's default: one decoder layer initialised from the span's first block, trained
    (MSE) on the span's input hidden states with the block kwargs of the dense forward, inserted
    where the span was; the pruned model saves and reloads as a plain transformers model."""
    from transformers import AutoModelForCausalLM

    from harness.recovery import replace
    from harness.surgery import drop_blocks

    removed = [2, 3]
    dense = _dense_with_span(removed)
    model, tok = dense()
    drop_blocks(model, adapter_for(model), removed)
    teacher = dense()[0]
    first = {n: p.clone() for n, p in teacher.model.layers[2].named_parameters()}
    built = []
    real_build = replace._build_core

    def spy(*args, **kwargs):   # the module as built, before any training step
        core = real_build(*args, **kwargs)
        built.append({n: p.detach().clone() for n, p in core.named_parameters()})
        return core

    replace._build_core = spy
    try:
        params = BUDGET | {"name": "replace", "lr": 5e-4, "steps": 16}
        ctx = _ctx(model, data_dir, teacher_factory=dense,
                   report={"removed": {"unit": "block", "indices": removed, "count": 2, "of": 6}})
        report = get_recovery("replace")(model, tok, params, ctx)
    finally:
        replace._build_core = real_build
    rep = report["replace"]
    assert rep["module"] == "layer"
    assert built[0].keys() == first.keys() and all(torch.equal(built[0][n], first[n]) for n in first)
    assert rep["params_added"] == sum(p.numel() for p in first.values())
    assert rep["heldout_hidden_loss_after"] < rep["heldout_hidden_loss_before"]
    layer = model.model.layers[2]                     # the trained layer, where the span was
    assert type(layer) is type(teacher.model.layers[2]) and layer.self_attn.layer_idx == 2
    assert not torch.equal(layer.mlp.down_proj.weight, first["mlp.down_proj.weight"])   # it trained
    assert [blk.self_attn.layer_idx for blk in model.model.layers] == list(range(5))
    assert model.config.num_hidden_layers == 5
    # the layer ran with the dense forward's rotary embeddings and causal mask: fed the span's
    # input, it reproduces the whole model's hidden state at its position
    x = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = model(input_ids=x, output_hidden_states=True).hidden_states   # h[2]: input of block 2
        h_in, h_out, kws = replace._boundary_states(teacher, adapter_for(teacher), [(2, 4)], x)
        direct = layer(h[2], **{k: v for k, v in kws[0].items()})
        torch.testing.assert_close(h[3], direct if torch.is_tensor(direct) else direct[0])
        reference = model(input_ids=x).logits
    model.save_pretrained(tmp_path / "pruned", safe_serialization=True)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, reference)


def test_replace_needs_removed_blocks(data_dir):
    model, tok = make_tiny("llama")
    with pytest.raises(ValueError, match="removed blocks"):
        get_recovery("replace")(model, tok, BUDGET | {"name": "replace"}, _ctx(model, data_dir))


def test_resume_gives_the_uninterrupted_result(tmp_path, data_dir):
    params = BUDGET | {"name": "lora", "r": 4, "steps": 6, "schedule": "cosine", "warmup_steps": 1,
                       "dropout": 0.1, "checkpoint_every": 2}
    _, tok = make_tiny("llama")

    straight = _prune_half(make_tiny("llama")[0])
    get_recovery("lora")(straight, tok, params, _ctx(straight, data_dir, tmp_path / "a"))

    first = _prune_half(make_tiny("llama")[0])
    with pytest.raises(Preempted):
        get_recovery("lora")(first, tok, params | {"stop_after": 3}, _ctx(first, data_dir, tmp_path / "b"))
    torch.manual_seed(1234)  # a restarted process has another RNG state; the checkpoint restores it
    resumed = _prune_half(make_tiny("llama")[0])
    report = get_recovery("lora")(resumed, tok, params, _ctx(resumed, data_dir, tmp_path / "b"))
    assert report["resumed_from_step"] == 3
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    assert not (tmp_path / "b" / "lora").exists()  # completed: checkpoint removed


def _config(*overrides):
    from harness.config import compose_config
    from omegaconf import OmegaConf

    cfg = compose_config(["model=tiny-llama", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("overrides,message", [
    (["recovery=lora", "recovery.corpus=wikitext2", "recovery.split=test"], "evaluation split"),
    (["recovery=kd", "recovery.corpus=c4", "recovery.split=validation", "eval.ppl.datasets=[c4]"], "evaluation split"),
    (["recovery=partial", "recovery.corpus=wikitext2", "recovery.split=validation",
      "eval.ppl.datasets=[wikitext2]", "+eval.ppl.split=validation"], "evaluated by this run"),
    (["recovery=lora", "recovery.steps=0"], "steps"),
    (["recovery=lora", "+recovery.bogus=1"], "unknown key"),
    (["recovery=lora", "recovery.tokens=1000"], "multiple"),
    (["recovery=lora", "recovery.tokens=1024", "recovery.steps=5"], "disagree"),
    (["recovery=lora", "recovery.schedule=wiggly"], "schedule"),
    (["recovery=kd", "recovery.temperature=0"], "temperature"),
    (["recovery=replace", "recovery.module=transformer"], "module"),
    (["recovery=partial", "recovery.last_k=null"], "last_k"),
    (["recovery=lora", "recovery.corpus=nonsense"], "unknown corpus"),
    (["recovery=lora", "recovery.stop_after=48"], "stop_after"),
])
def test_config_errors_are_one_line(overrides, message, data_dir):
    with pytest.raises(ConfigError, match=message) as info:
        validate(_config(*overrides))
    assert "\n" not in str(info.value)


def test_every_recovery_config_validates(data_dir):
    from harness.recovery import RECOVERIES

    for name in RECOVERIES:
        plan = validate(_config(f"recovery={name}"))
        assert (plan.recovery is None) == (name == "none")


def _run(tmp_path, *overrides):
    from harness.config import compose_config
    from harness.run import run_experiment

    small = ["recovery.steps=6", "recovery.batch_size=2", "recovery.seq_len=32", "recovery.lr=1e-2",
             "recovery.warmup_steps=0", "recovery.heldout_docs=8", "recovery.heldout_windows=2",
             "recovery.max_docs=40", "calib.n_samples=4", "calib.seq_len=64", "eval.ppl.max_windows=2",
             "eval.ppl.seq_len=128"]
    cfg = compose_config(["model=tiny-llama", f"paths.results_dir={tmp_path}", f"+paths.checkpoint_dir={tmp_path}/ck",
                          "runtime.threads=1", *small, *overrides])
    return run_experiment(cfg)


def test_run_records_post_recovery_sparsity(tmp_path, data_dir):
    record = _run(tmp_path, "method=wanda", "target=unstructured_50", "recovery=lora")
    assert record["status"] == "ok", record["error"]
    rec = record["recovery"]
    assert rec["name"] == "lora" and rec["budget"]["train_tokens"] == 6 * 2 * 32
    assert rec["sparsity_blocks_before"] == pytest.approx(0.5)
    assert record["measured"]["sparsity_blocks"] == pytest.approx(0.5)  # measured after recovery
    assert rec["heldout_loss_after"] < rec["heldout_loss_before"]


def test_run_replace_after_depth_pruning(tmp_path, data_dir):
    record = _run(tmp_path, "method=shortgpt", "target=depth_25", "recovery=replace", "recovery.lr=3e-3")
    assert record["status"] == "ok", record["error"]
    rec = record["recovery"]
    spans = rec["replace"]["spans"]
    assert [i for a, b in spans for i in range(a, b)] == record["prune_report"]["removed"]["indices"]
    block = sum(p.numel() for p in make_tiny("llama")[0].model.layers[0].parameters())
    assert rec["replace"]["module"] == "layer" and rec["replace"]["params_added"] == len(spans) * block
    assert record["measured"]["params_after"] == record["measured"]["params_before"] - \
        sum(p.numel() for p in make_tiny("llama")[0].model.layers[0].parameters()) * len(
            record["prune_report"]["removed"]["indices"]) + rec["replace"]["params_added"]


def test_preempted_run_resumes_when_run_again(tmp_path, data_dir):
    first = _run(tmp_path, "method=magnitude", "target=unstructured_50", "recovery=partial", "recovery.last_k=2",
                 "recovery.stop_after=3")
    assert first["status"] == "failed" and first["error"]["stage"] == "recover"
    assert first["error"]["type"] == "Preempted"
    again = _run(tmp_path, "method=magnitude", "target=unstructured_50", "recovery=partial", "recovery.last_k=2")
    assert again["status"] == "ok", again["error"]
    assert again["recovery"]["resumed_from_step"] == 3
    assert again["measured"]["sparsity_blocks"] == pytest.approx(0.5)


def test_budget_defaults_equal_the_shared_recovery_yaml():
    """conf/recovery/_budget.yaml is what every recovery inherits; run identity drops a key at the
    Budget default, so the two must agree for a key left out to mean the key at its YAML value."""
    import dataclasses

    import yaml

    from harness.config import CONF_DIR
    from harness.recovery.budget import Budget

    shared = yaml.safe_load((CONF_DIR / "recovery" / "_budget.yaml").read_text())
    declared = {f.name: f.default for f in dataclasses.fields(Budget)}
    assert set(shared) - {"name"} == set(declared)
    assert shared["seed"] is None   # null: the run's top-level seed, filled in before Budget sees it
    assert {k: v for k, v in shared.items() if k not in ("name", "seed")} == \
        {k: v for k, v in declared.items() if k != "seed"}
    for path in sorted((CONF_DIR / "recovery").glob("*.yaml")):
        y = yaml.safe_load(path.read_text())
        if path.stem not in ("_budget", "none"):
            assert y["defaults"] == ["_budget", "_self_"], path.name
