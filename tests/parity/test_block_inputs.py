"""What a pruned block receives and the statistic it is pruned from, against the references'
sequential pipeline (locuslab/wanda prune_wanda: a batch-1 forward per calibration sequence
through each layer with the captured mask / positions, the model's default attention
implementation; `add_batch` accumulating scaler_row as a running mean):

- the block loop's inputs (capture + one block at a time) are bit-identical to a plain
  transformers forward's hidden states, block after block: the block forward, attention
  implementation, rotary tables and masks add no difference;
- the Wanda statistic is accumulated in the reference's order and is bit-identical to its
  expression, so equal inputs give equal masks, bit for bit, in every block (summing first and
  dividing once differed in the last float32 bits, which flipped near-tied weights and drifted
  from block 7 on SmolLM2: docs/methods.md, "End-to-end agreement with locuslab/wanda")."""

from __future__ import annotations

import torch

from harness.adapters import adapter_for
from harness.blocks.capture import capture_block_inputs, run_block
from harness.blocks.collectors import InputNorm
from tests.parity.tiny import calibration, model_pair


def test_block_loop_inputs_equal_plain_forward_bit_for_bit():
    model, _ = model_pair(num_hidden_layers=6)
    ids = calibration(n=3, seq=64).input_ids
    adapter = adapter_for(model)
    with torch.no_grad():   # hidden_states[i]: the input of block i, one sequence at a time
        plain = [model(row.unsqueeze(0), output_hidden_states=True, use_cache=False).hidden_states for row in ids]
    inputs = capture_block_inputs(model, adapter, ids, 1, "cpu")
    for i, block in enumerate(adapter.blocks(model)):
        for j, h in enumerate(inputs.hidden):
            assert torch.equal(h, plain[j][i]), f"block {i}, sequence {j}"
        inputs = inputs.advance(run_block(block, adapter, inputs))


def test_input_norm_is_the_reference_running_mean_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(b, 96, 200, generator=g) * s for b, s in ((1, 1.0), (1, 3.0), (2, 0.5), (1, 10.0))]
    ours = InputNorm(200, "cpu")
    scaler_row, n = torch.zeros(200), 0
    for x in batches:   # x: [b, seq, in]; wanda's add_batch, written from its documented expression
        ours.update(x)
        tmp = x.shape[0]
        scaler_row *= n / (n + tmp)
        n += tmp
        scaler_row += torch.norm(x.reshape(-1, x.shape[-1]).t().float(), p=2, dim=1) ** 2 / n
    got = ours.result()
    assert torch.equal(got["input_sq_mean"], scaler_row)
    assert torch.equal(got["input_norm"], torch.sqrt(scaler_row))
    # the order matters at this precision: one sum divided once is not the same float32 number
    once = torch.cat([x.reshape(-1, 200) for x in batches]).pow(2).sum(0) / n
    assert not torch.equal(once, scaler_row)
