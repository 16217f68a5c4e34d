"""Encoder support (harness.encoders): the adapter on tiny random-init BERT, RoBERTa and ELECTRA
classifiers, FLOPs accounting, masked == physically pruned outputs, loading through the harness,
the task split and the accuracy evaluator."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.encoders import encoder_flops, live_units, mask_units, remove_dead_units, unit_flops
from harness.models import build_random_init

FAMILIES = ["bert", "roberta", "electra"]
CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_labels=2)


def tiny_encoder(family: str, seed: int = 0):
    extra = {"embedding_size": 32} if family == "electra" else {}
    model, tok = build_random_init(family, {**CONFIG, **extra}, seed)
    return model.eval(), tok


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 250, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_reads_the_encoder_layout(family):
    model, _ = tiny_encoder(family)
    a = adapter_for(model)
    assert a.family == family and a.encoder and a.head_dim == 16
    assert len(a.blocks(model)) == 2
    lin = a.linears(a.blocks(model)[0])
    assert [tuple(l.weight.shape) for l in lin.values()] == [(64, 64)] * 4 + [(128, 64), (64, 128)]
    assert a.head(model).out_features == 2 and a.embedding(model).num_embeddings == 260
    assert live_units(model, a) == ([4, 4], [128, 128])


def test_flops_follow_the_reference_accounting():
    f_head, f_neuron = unit_flops(10, 16, 64)
    assert f_head == 6 * 64 * 16 * 10 + 4 * 100 * 16 + 2 * 16 * 10 * 64
    assert f_neuron == 4 * 10 * 64
    model, _ = tiny_encoder("bert")
    f = encoder_flops(model, adapter_for(model), 10)
    assert f["flops"] == 8 * f_head + 256 * f_neuron


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_equals_physically_pruned(family):
    model, _ = tiny_encoder(family)
    a = adapter_for(model)
    blocks = a.blocks(model)
    mask_units(blocks[0], a, "attn", torch.tensor([1, 0, 1, 0]))
    mask_units(blocks[0], a, "ffn", torch.arange(128) % 3 == 0)
    mask_units(blocks[1], a, "attn", torch.zeros(4))              # every head: one zero head stays
    mask_units(blocks[1], a, "ffn", torch.zeros(128))             # every neuron
    before = encoder_flops(model, a, 20)
    with torch.no_grad():
        masked = model(**_inputs()).logits
    removed = remove_dead_units(model, a)
    with torch.no_grad():
        pruned = model(**_inputs()).logits
    assert removed == {"heads": 5, "neurons": 128 - 43 + 128}
    assert torch.allclose(masked, pruned, atol=1e-6)
    assert encoder_flops(model, a, 20)["flops"] == before["flops"]
    assert a.part(blocks[0], "q").out_features == 32 and a.part(blocks[0], "fc1").out_features == 43


def test_encoder_configs_load_as_sequence_classifiers(cache_dir):
    from harness.config import compose_config
    from harness.models import load_model

    for family in FAMILIES:
        src = dict(compose_config([f"model=enc-tiny-{family}"]).model.source)
        loaded = load_model(f"enc-tiny-{family}", src, torch.float32, "cpu", cache_dir, offload="auto")
        assert type(loaded.model).__name__.endswith("ForSequenceClassification")
        assert loaded.residency is None


def test_task_split_is_disjoint_and_seeded(data_dir):
    from harness.tasks import task_rows

    train, _ = task_rows("boolq", "train", data_dir)
    held, sha = task_rows("boolq", "eval", data_dir)
    assert len(train) + len(held) == 3270 and 0.17 < len(held) / 3270 < 0.23
    assert task_rows("boolq", "eval", data_dir)[0] == held        # deterministic
    other, _ = task_rows("boolq", "eval", data_dir, seed=1)
    assert other != held
    rte, _ = task_rows("rte", "eval", data_dir)
    assert {y for *_, y in rte} == {0, 1}


def test_accuracy_evaluator_declares_a_higher_is_better_result(data_dir):
    from harness.evaluation import get_evaluator
    from harness.evaluation.context import EvalContext
    from harness.record_schema import check_declarations

    model, tok = tiny_encoder("bert")
    out = get_evaluator("accuracy")(model, tok, {"task": "rte", "max_length": 64, "batch_size": 16},
                                    EvalContext(device="cpu", data_dir=data_dir))
    r = out.values["rte"]
    assert 0 <= r["acc"] <= 1 and r["n"] < 277 and r["split"] == "eval"
    metric = out.declaration["metrics"][0]
    assert metric["higher_is_better"] and metric["quality"] and metric["path"] == ["rte", "acc"]
    check_declarations({"accuracy": out.values}, {"accuracy": out.declaration})
