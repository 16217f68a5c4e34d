"""Every method's tags against the Awesome-LLMs-Pruning list's own tags.json (the outside truth):
a method that implements a listed paper carries exactly that paper's badges, a run's tags follow
what ran, and the vocabulary holds every value the list uses."""

from __future__ import annotations

import json

import pytest

from harness.blocks.importance import METRICS
from harness.kv import POLICIES
from methods.registry import available, build_method
from methods.tags import LIST_KEYS, LIST_VOCABULARY, run_tags


@pytest.fixture(scope="module")
def listed(data_dir) -> dict[str, dict]:
    rows = json.loads((data_dir / "awesome-llms-pruning" / "tags.json").read_text())
    return {row["paper"]: row for row in rows}


def _check(link, tags, listed, who):
    assert link in listed, f"{who}: {link} is not a paper of the list"
    row = listed[link]
    assert {axis: tags.as_dict()[axis] for axis in LIST_KEYS} == {axis: row[key] for axis, key in LIST_KEYS.items()}, who


def test_every_listed_method_and_kv_policy_carries_its_papers_tags(listed):
    seen = set()
    cards = [(name, build_method(name)) for name in available()] + [(name, POLICIES.build(name)) for name in POLICIES]
    for name, card in cards:
        link, tags = card.paper_entry()
        if link:
            _check(link, tags, listed, name)
            seen.add(link)
    # the methods behind the list's best-known entries are all matched (not silently unlisted)
    for link in ("https://arxiv.org/abs/2306.11695", "https://arxiv.org/abs/2301.00774",
                 "https://arxiv.org/abs/2305.11627", "https://arxiv.org/abs/2403.03853",
                 "https://arxiv.org/abs/2306.14048", "https://openreview.net/forum?id=Tr0lPx9woF"):
        assert link in seen, link


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_depth_metric_carries_its_papers_tags(listed, metric):
    link, tags = build_method("depth", {"metric": metric}).paper_entry("blocks")
    if link:
        _check(link, tags, listed, f"depth metric={metric}")
    sub_link, sub_tags = build_method("depth").paper_entry("sublayers")
    _check(sub_link, sub_tags, listed, "depth on sublayers")


def test_vocabulary_is_the_lists(listed):
    for axis, key in LIST_KEYS.items():
        assert {row[key] for row in listed.values()} <= set(LIST_VOCABULARY[axis]), axis


def test_run_tags_follow_what_ran():
    wanda = build_method("wanda").tags
    assert run_tags(wanda, "nm", "none", False, True)["type"] == "Semi-structured"
    plain = run_tags(wanda, "unstructured", "none", False, True)
    assert (plain["type"], plain["retrain"], plain["weights"]) == ("Unstructured", "Without", "Frozen")
    lora = run_tags(wanda, "unstructured", "lora", False, True)
    assert (lora["retrain"], lora["weights"]) == ("Efficient-LoRA", "Update")
    # ShortGPT's paper heals with LoRA; a run without recovery did not
    short = run_tags(build_method("shortgpt").tags, "blocks", "none", False, True)
    assert (short["retrain"], short["weights"]) == ("Without", "Frozen")
    assert run_tags(build_method("sparsegpt").tags, "unstructured", "none", True, True)["weights"] == "Update"
    mini = run_tags(build_method("minitron").tags, "width", "none", False, True)
    assert mini["data"] == "Calibration"
