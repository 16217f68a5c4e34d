"""Family adapters on tiny random-init configs: the block loop reproduces the model's own forward."""

import pytest
import torch

from harness.adapters import adapter_for
from harness.blocks.capture import capture_block_inputs, run_block
from tests.conftest import make_tiny

FAMILIES = ["llama", "qwen2", "mistral", "opt"]


@pytest.mark.parametrize("family", FAMILIES)
def test_block_by_block_matches_full_forward(family):
    model, _ = make_tiny(family)
    adapter = adapter_for(model)
    ids = torch.randint(0, 250, (3, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states  # embeddings, then each block
        inputs = capture_block_inputs(model, adapter, ids, batch_size=2, device="cpu")
        for i, block in enumerate(adapter.blocks(model)):
            got = torch.cat(inputs.hidden)
            assert torch.allclose(got, hidden[i], atol=1e-5), f"block {i} input differs"
            inputs = inputs.replace(run_block(block, adapter, inputs))


@pytest.mark.parametrize("family", FAMILIES)
def test_linears_and_input_groups(family):
    model, _ = make_tiny(family)
    adapter = adapter_for(model)
    block = adapter.blocks(model)[0]
    linears = adapter.linears(block)
    assert all(isinstance(lin, torch.nn.Linear) for lin in linears.values())
    groups = adapter.input_groups()
    assert len(groups[0]) == 3  # q, k, v share the attention input
    # members of a group really read the same input width
    for group in groups:
        assert len({linears[n].in_features for n in group}) == 1
    assert adapter.embedding(model).weight.shape[0] == model.config.vocab_size


def test_unknown_family_is_a_clear_error():
    model, _ = make_tiny("llama")
    model.config.model_type = "mamba"
    with pytest.raises(ValueError, match="no family adapter"):
        adapter_for(model)
