"""Run identity and seeds: the top-level seed reaches calibration, a seed sweep over identical
draws is flagged, and a key added at its default leaves every existing run_id unchanged."""

from __future__ import annotations

import copy
import dataclasses

from harness.records import run_id_for
from harness.run import run_experiment
from tests.robustness.conftest import plain, tiny

WANDA = ("method=wanda", "target=unstructured_50")


def test_top_level_seed_drives_calibration(tmp_path):
    a = run_experiment(tiny(tmp_path, *WANDA, "seed=0"))
    b = run_experiment(tiny(tmp_path, *WANDA, "seed=1"))
    assert a["status"] == b["status"] == "ok"
    assert (a["calibration"]["seed"], b["calibration"]["seed"]) == (0, 1)
    assert a["calibration"]["tokens_sha256"] != b["calibration"]["tokens_sha256"]


def test_a_pinned_calibration_seed_is_kept_and_flagged_in_a_seed_sweep(tmp_path):
    from harness.sweep import DONE, Cell, Suite, identical_seed_draws

    cells = []
    for seed in (0, 1):
        cfg = tiny(tmp_path, *WANDA, f"seed={seed}", "calib.seed=0")
        rec = run_experiment(cfg)
        assert rec["calibration"]["seed"] == 0
        cells.append(Cell([f"seed={seed}"], rec["run_id"], plain(cfg), state=DONE, record=rec))
    [warning] = identical_seed_draws(Suite("probe", [], cells, tmp_path / "results"))
    assert warning == "seeds [0, 1] of cell seed=0 calibrated on identical tokens (the seed does not reach calibration)"


def test_adding_a_key_at_its_default_leaves_run_ids_unchanged(monkeypatch):
    import harness.schema as schema
    from harness.config import compose_config

    cfg = plain(compose_config(["model=tiny-llama", *WANDA]))
    before = run_id_for(cfg)
    # a code upgrade adds calib.new_knob (default 3) to the schema and the YAML
    upgraded = dataclasses.make_dataclass("Calib", [("new_knob", int, dataclasses.field(default=3))],
                                          bases=(schema.Calib,))
    monkeypatch.setitem(schema.SCHEMAS, "calib", upgraded)
    new = copy.deepcopy(cfg)
    new["calib"]["new_knob"] = 3
    assert run_id_for(new) == before
    new["calib"]["new_knob"] = 4
    assert run_id_for(new) != before


def test_keys_added_since_records_were_written_do_not_move_ids():
    from harness.config import compose_config

    cfg = plain(compose_config(["model=tiny-llama", *WANDA]))
    old = copy.deepcopy(cfg)
    for key in ("kv", "output"):                    # added after the first records
        old.pop(key)
    del old["calib"]["allow_eval_split"]
    old["prune"].pop("reuse")
    assert run_id_for(old) == run_id_for(cfg)
    # a value that changes a number still moves it
    other = copy.deepcopy(cfg)
    other["calib"]["n_samples"] = 17
    assert run_id_for(other) != run_id_for(cfg)


def test_resolved_and_unresolved_seeds_share_an_id():
    from harness.config import compose_config
    from harness.schema import resolve_seeds

    cfg = plain(compose_config(["model=tiny-llama", *WANDA, "seed=2"]))
    assert cfg["calib"]["seed"] is None and resolve_seeds(cfg)["calib"]["seed"] == 2
    assert run_id_for(resolve_seeds(cfg)) == run_id_for(cfg)


def test_reindex_moves_an_earlier_identity_record_to_its_current_id(tmp_path):
    import json

    from harness.identity import reindex
    from harness.validate import param_defaults
    from harness.records import record_path

    rec = run_experiment(tiny(tmp_path))
    path = record_path(tmp_path / "results", rec["run_id"])
    old = json.loads(path.read_text())
    old.pop("identity_version")
    old["run_id"] = "00000000deadbeef"                      # as written under identity v1
    path.unlink()
    old_path = path.with_name("00000000deadbeef.json")
    old_path.write_text(json.dumps(old))
    assert reindex(tmp_path / "results", param_defaults) == [f"00000000deadbeef.json -> {rec['run_id']}.json"]
    moved = json.loads(path.read_text())
    assert moved["previous_run_id"] == "00000000deadbeef" and moved["metrics"] == old["metrics"]
    assert not old_path.exists()
