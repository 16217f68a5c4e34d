import pytest
import torch

from harness.blocks.masks import keep_nm, keep_unstructured, nm_violations


def test_row_group_prunes_exact_count_per_row():
    score = torch.rand(7, 40, generator=torch.Generator().manual_seed(0))
    keep = keep_unstructured(score, 0.3, "row")
    assert (keep.sum(1) == 40 - int(40 * 0.3)).all()
    # the pruned entries are the lowest of their row
    for r in range(7):
        assert score[r][~keep[r]].max() <= score[r][keep[r]].min()


def test_layer_group_prunes_exact_count_overall():
    score = torch.rand(6, 50, generator=torch.Generator().manual_seed(1))
    keep = keep_unstructured(score, 0.55, "layer")
    assert int((~keep).sum()) == int(300 * 0.55)
    assert score[~keep].max() <= score[keep].min()


def test_ties_are_broken_to_the_exact_count():
    keep = keep_unstructured(torch.ones(4, 8), 0.5, "layer")
    assert int((~keep).sum()) == 16


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_keeps_top_n_of_each_group(n, m):
    score = torch.rand(5, 4 * m, generator=torch.Generator().manual_seed(2))
    keep = keep_nm(score, n, m)
    groups = keep.reshape(5, 4, m)
    assert (groups.sum(-1) == n).all()
    s = score.reshape(5, 4, m)
    assert (s.masked_fill(~groups, float("inf")).amin(-1) >= s.masked_fill(groups, -float("inf")).amax(-1)).all()


def test_nm_violations_counts_dense_groups():
    w = torch.ones(2, 8)
    assert nm_violations(w, 2, 4) == (4, 4)
    w[:, [0, 1, 4, 5]] = 0
    assert nm_violations(w, 2, 4) == (0, 4)
    with pytest.raises(ValueError):
        nm_violations(torch.ones(2, 6), 2, 4)


def test_bad_sparsity_rejected():
    with pytest.raises(ValueError):
        keep_unstructured(torch.rand(2, 2), 1.0)


@pytest.mark.parametrize("levels", [3, 50, None], ids=["heavy-ties", "some-ties", "no-ties"])
@pytest.mark.parametrize("group", ["row", "layer"])
def test_selection_equals_the_stable_sort(levels, group):
    """The selection prunes exactly the first k of a stable ascending sort (the references' mask),
    ties included: scores quantised to a few levels make most rows cut through a run of ties."""
    g = torch.Generator().manual_seed(7)
    score = torch.rand(37, 96, generator=g)
    if levels is not None:
        score = (score * levels).floor()
    for sparsity in (0.0, 0.01, 0.5, 0.6, 0.97):
        flat = score if group == "row" else score.reshape(1, -1)
        k = int(flat.shape[1] * sparsity)
        expect = torch.ones_like(flat, dtype=torch.bool)
        expect.scatter_(1, torch.sort(flat, dim=1, stable=True).indices[:, :k], False)
        got = keep_unstructured(score, sparsity, group)
        assert torch.equal(got, expect.reshape(score.shape)), (sparsity, group)


def test_selection_with_nan_scores_prunes_as_the_sort():
    score = torch.tensor([[0.3, float("nan"), 0.1, 0.2], [float("nan"), float("nan"), 0.5, 0.5]])
    expect = torch.ones_like(score, dtype=torch.bool)
    expect.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :3], False)
    assert torch.equal(keep_unstructured(score, 0.75, "row"), expect)
