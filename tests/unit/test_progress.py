"""Progress you can see: step lines and heartbeats in the log, the block loop's per-block lines,
live markers that tell queued from running cells, and the sweep monitor's counts."""

from __future__ import annotations

import json
import logging
import time

import pytest

from harness.progress import Progress, add_listener, remove_listener


def test_step_lines_heartbeat_and_listeners(caplog, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_QUIET", "1")
    monkeypatch.setenv("PRUNEBENCH_PROGRESS_EVERY_S", "100")   # only first/last step lines
    monkeypatch.setenv("PRUNEBENCH_HEARTBEAT_S", "0.2")
    seen = []
    listener = lambda kind, facts: seen.append((kind, facts["step"], facts.get("loss")))  # noqa: E731
    add_listener(listener)
    try:
        with caplog.at_level(logging.INFO, logger="prunebench.progress"):
            with Progress("recovery lora", total=3, unit="step", kind="recovery_step") as p:
                p.advance(loss=2.5)
                time.sleep(5.6)  # one long step: the heartbeat thread speaks (it wakes every <=5 s)
                p.advance(loss=2.0)
                p.advance(loss=1.5)
    finally:
        remove_listener(listener)
    text = caplog.text
    assert "recovery lora: step 1/3" in text and "loss=2.5" in text
    assert "recovery lora: in step 2/3 for" in text                 # heartbeat inside the long step
    assert "recovery lora: step 2/3" not in text                      # throttled (every_s=100)
    assert "recovery lora: step 3/3" in text and "ETA 0.0s" in text   # the last step always
    assert seen == [("recovery_step", 1, 2.5), ("recovery_step", 2, 2.0), ("recovery_step", 3, 1.5)]


def test_block_loop_logs_every_block_when_blocks_are_slow(tiny_llama, caplog, monkeypatch):
    import torch

    from harness.adapters import adapter_for
    from harness.blocks.loop import block_loop

    monkeypatch.setenv("PRUNEBENCH_QUIET", "1")
    monkeypatch.setenv("PRUNEBENCH_PROGRESS_EVERY_S", "0")   # every block is "slow"
    model, _ = tiny_llama
    ids = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="prunebench.progress"):
        block_loop(model, adapter_for(model), ids, lambda blk: None, [0.5] * 4, desc="prune test")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prune test: block")]
    assert [ln.split(",")[0] for ln in lines] == [f"prune test: block {i}/4" for i in range(1, 5)]
    assert all("/block" in ln and "ETA" in ln for ln in lines)


def test_live_marker_queued_then_running_with_stage(tmp_path):
    from harness.sweep import (QUEUED, RUNNING, Cell, LiveMarker, Suite, marker_path, refresh_states,
                               write_marker)

    import os

    suite = Suite("t", [], [Cell(overrides=["method=wanda"], run_id="abc")], tmp_path)
    write_marker(tmp_path, "abc", sweep_pid=os.getpid(), pid=None, submitted=True, slurm_job="77_0")
    refresh_states(suite)
    assert suite.cells[0].state == QUEUED and "slurm job 77_0" in suite.cells[0].detail

    live = LiveMarker(tmp_path, "abc", every_s=0)
    live("stage", {"stage": "prune"})
    live("block", {"desc": "prune sparsegpt", "step": 12, "total": 30, "eta_s": 250.0})
    info = json.loads(marker_path(tmp_path, "abc").read_text())
    assert info["pid"] == os.getpid() and not info.get("submitted")
    refresh_states(suite)
    cell = suite.cells[0]
    assert cell.state == RUNNING
    assert cell.detail.startswith("stage prune for ") and "(prune sparsegpt 12/30, ETA 4m10s)" in cell.detail


@pytest.mark.parametrize("argv, ok", [
    (["hydra/launcher=submitit_slurm"], True), (["hydra/launcher=submitit_local"], True),
    (["hydra/launcher=basic"], True), (["hydra/launcher=slurm"], True),
    (["method=wanda,magnitude"], True), (["eval=[quick,latency_quick]"], True), (["seed=3"], True),
    (["hydra/launcher=submitit_slurmm"], False), (["method=wanda,magnitudde"], False)])
def test_group_pre_check_rejects_only_names_that_exist_nowhere(argv, ok):
    from harness.config import check_group_choices

    problem = check_group_choices(argv)
    assert (problem is None) == ok, problem
    if not ok:
        assert "did you mean" in problem and "\n" not in problem


def test_group_pre_check_points_an_option_of_one_other_group_to_that_group():
    from harness.config import check_group_choices

    assert check_group_choices(["method=h2o"]) == "h2o is not a method but an option of kv: use kv=h2o"
    assert check_group_choices(["kv=wanda"]) == "wanda is not a kv but an option of method: use method=wanda"
    # `none` is an option of several groups (kv, recovery, target): no one group to point to
    assert check_group_choices(["method=none"]).startswith("unknown method 'none'")


def test_sweep_and_status_have_a_real_help(capsys):
    from harness import status, sweep

    assert sweep.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m harness.sweep suite=<name>" in out and "dry_run=true" in out
    assert status.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m harness.status" in out and "queued" in out
