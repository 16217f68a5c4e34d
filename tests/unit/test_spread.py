"""runtime.devices: calibration micro-batches spread over copies of the block (here two CPU
"devices", the only kind this suite can count on) give one device's outputs exactly and its
statistics up to float summation order; pruning ends with the same masks."""

from __future__ import annotations

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.allocators import build_allocator
from harness.blocks.capture import capture_block_inputs, run_block
from harness.blocks.context import PruneContext
from harness.blocks.collectors import make_collector
from harness.blocks.spread import check_devices, replicas, run_spread
from harness.targets import Target
from methods.registry import build_method
from tests.methods.tiny_block_helpers import tiny_context

TWO = ("cpu", "cpu")


def test_spread_outputs_equal_one_device():
    model, adapter, ctx = tiny_context(Target("unstructured_50", "unstructured", 0.5))
    inputs = capture_block_inputs(model, adapter, ctx.calibration.input_ids, 1, "cpu")   # 4 micro-batches
    block = adapter.blocks(model)[0]
    block.register_forward_pre_hook(lambda *_: None)   # the original's hooks stay off its copies
    copies = replicas(block, TWO)
    assert copies[0] is block and copies[1] is not block and not copies[1]._forward_pre_hooks
    want = run_block(block, adapter, inputs)
    got = run_spread(copies, TWO, adapter, inputs)
    assert len(got) == len(want) == 4
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["hessian", "input_norm", "input_sum", "input_var"])
def test_merged_collectors_equal_one_collector(name):
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(1, 16, 24, generator=g) for _ in range(5)]   # [batch, seq, in]
    one, parts = make_collector(name, 24, "cpu"), [make_collector(name, 24, "cpu") for _ in TWO]
    for k, x in enumerate(batches):
        one.update(x)
        parts[k % 2].update(x)
    parts[0].merge(parts[1])
    want, got = one.result(), parts[0].result()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
def test_pruning_on_two_devices_equals_one(method):
    target = Target("unstructured_50", "unstructured", 0.5)
    weights = []
    for devices in ((), TWO):
        model, adapter, ctx = tiny_context(target, devices=devices)
        ctx.batch_size = 1   # 4 micro-batches: two per device
        build_method(method).prune(model, ctx)
        weights.append([lin.weight.detach().clone() for b in adapter.blocks(model)
                        for lin in adapter.linears(b).values()])
    for a, b in zip(*weights):
        assert torch.equal(a == 0, b == 0)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_devices_in_the_config():
    from omegaconf import OmegaConf

    from harness.config import compose_config
    from harness.validate import validate

    assert check_devices(None) == () and check_devices(["cpu", "cpu"]) == TWO
    with pytest.raises(ValueError):
        check_devices(["no-such-device"])
    cfg = compose_config(["method=wanda", "target=unstructured_50", "runtime.devices=[cpu,cpu]"])
    plan = validate(OmegaConf.to_container(cfg, resolve=True))
    assert plan.device == "cpu" and plan.runtime.devices == TWO


def test_moe_expert_without_routed_tokens_on_two_devices():
    """Routed experts on two devices: an expert no token reaches on either copy is still found,
    reported and pruned on every token of its layer, as on one device."""
    from tests.conftest import make_tiny_family
    from tests.methods.tiny_block_helpers import calibration

    results = []
    for devices in ((), TWO):
        model, _ = make_tiny_family("mixtral")
        adapter = adapter_for(model)
        for block in adapter.blocks(model):   # every token routed away from expert 3
            gate = block.mlp.gate
            gate.forward = lambda h, original=gate.forward: (lambda lg, w, idx: (lg, w, idx % 3))(*original(h))
        ctx = PruneContext(adapter=adapter, target=Target("unstructured_50", "unstructured", 0.5),
                           calibration=calibration(seq=24), device="cpu", allocator=build_allocator("uniform"),
                           batch_size=1, devices=devices)
        report = build_method("wanda").prune(model, ctx)
        results.append((sorted(report["linears_without_routed_tokens"]),
                        [lin.weight.detach().clone() for b in adapter.blocks(model)
                         for lin in adapter.linears(b).values()]))
    assert results[0][0] == results[1][0] and len(results[0][0]) == 12
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a == 0, b == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("devices", [("cuda:0", "cuda:0"), ("cuda:0", "cpu")])
def test_pruning_spread_from_a_gpu_equals_that_gpu_alone(devices):
    """On a CUDA node: the micro-batches on two copies of each block (the same GPU twice, or the GPU
    and the host) give the masks and weights of the GPU alone, up to float summation order (the
    statistics are summed in another order; near-tied scores may flip, so 99.9% agreement)."""
    from tests.methods.tiny_block_helpers import calibration, make_tiny

    target = Target("unstructured_50", "unstructured", 0.5)
    weights = []
    for devs in ((), devices):
        model, _tok = make_tiny("llama")
        model = model.to("cuda:0")
        adapter = adapter_for(model)
        ctx = PruneContext(adapter=adapter, target=target, calibration=calibration(), device="cuda:0",
                           allocator=build_allocator("uniform"), batch_size=1, devices=devs)
        build_method("sparsegpt").prune(model, ctx)
        weights.append([lin.weight.detach().float().cpu() for b in adapter.blocks(model)
                        for lin in adapter.linears(b).values()])
    for a, b in zip(*weights):
        assert (a == 0).eq(b == 0).float().mean() >= 0.999
        assert int((a == 0).sum()) == int((b == 0).sum())              # exact count on both
        same = (a == 0).eq(b == 0)
        torch.testing.assert_close(a[same], b[same], rtol=1e-3, atol=1e-4)
