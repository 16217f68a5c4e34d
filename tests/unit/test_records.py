import json

import pytest

from harness.records import read_record, record_path, run_id_for, validate_record, write_record


def _record(**kw):
    return {"run_id": "abc", "status": "ok", "method": {}, "model": {}, "target": {}, "config": {},
            "env": {}, **kw}


def test_run_id_ignores_paths_and_logging_but_not_semantics():
    base = {"method": {"name": "wanda"}, "target": {"ratio": 0.5}, "paths": {"results_dir": "/a"}}
    moved = {**base, "paths": {"results_dir": "/b"}, "wandb": {"mode": "offline"}}
    assert run_id_for(base) == run_id_for(moved)
    assert run_id_for(base) != run_id_for({**base, "target": {"ratio": 0.6}})


def test_atomic_write_leaves_no_temp_and_nan_is_json(tmp_path):
    from harness.evaluation.ppl import declare

    values = {"wikitext2": {"value": float("nan"), "seq_len": 8, "n_windows": 1}}
    path = write_record(tmp_path, _record(metrics={"ppl": values}, metric_declarations={"ppl": declare(values)}))
    assert path == record_path(tmp_path, "abc")
    assert [p.name for p in path.parent.iterdir()] == ["abc.json"]
    data = json.loads(path.read_text())
    assert data["metrics"]["ppl"]["wikitext2"]["value"] == "nan" and data["schema_version"] == "2"
    assert read_record(path)["status"] == "ok"


def test_validation_rejects_incomplete_records():
    with pytest.raises(ValueError, match="lacks keys"):
        validate_record({"run_id": "x"})
    with pytest.raises(ValueError, match="status"):
        write_record("/tmp", _record(status="done"))


def test_records_on_disk_name_roots_instead_of_machine_paths(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    record = _record(config={"paths": {"data_dir": str(data), "cache_dir": str(cache), "results_dir": None}},
                     calibration={"source": f"local:{data}/c4/train.jsonl"},
                     recovery={"checkpoint_dir": f"{cache}/checkpoints/x", "other": f"{tmp_path}/database"})
    on_disk = json.loads(write_record(tmp_path / "results", record).read_text())
    assert on_disk["calibration"]["source"] == "local:<data_dir>/c4/train.jsonl"
    assert on_disk["config"]["paths"]["data_dir"] == "<data_dir>"
    assert on_disk["recovery"]["checkpoint_dir"] == "<cache_dir>/checkpoints/x"
    # a sibling whose name only starts like a root is not under it (the temp root still applies)
    assert not on_disk["recovery"]["other"].startswith("<data_dir>")
    assert record["calibration"]["source"] == f"local:{data}/c4/train.jsonl"  # the caller's dict is untouched


def test_committed_records_hold_no_machine_path():
    import re
    from pathlib import Path

    absolute = re.compile(r"""(?:^|[\s:"'(])/(?:work|home|tmp|root|scratch|mnt|Users)/""")
    found = []

    def walk(obj, where):
        if isinstance(obj, str) and absolute.search(obj):
            found.append(f"{where}: {obj[:80]}")
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, where)
        elif isinstance(obj, list):
            for v in obj:
                walk(v, where)

    files = sorted((Path(__file__).resolve().parents[2] / "results").glob("**/records/*.json"))
    assert files, "the repository ships records under results/"
    for f in files:
        walk(json.loads(f.read_text()), f.name)
    assert not found, found[:5]


def test_write_atomic_is_all_or_nothing(tmp_path):
    """Records, markers and cache entries share one atomic write: a writer that dies leaves neither
    the file nor a temp file; with digest=True the sidecar verifies the file it sits beside."""
    from harness.digests import verify_file
    from harness.files import write_atomic

    target = tmp_path / "entries" / "x.pt"

    def dies(path):
        path.write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(target, dies, digest=True)
    assert list(target.parent.iterdir()) == []
    write_atomic(target, lambda path: path.write_bytes(b"whole"), digest=True)
    assert target.read_bytes() == b"whole" and verify_file(target)
    write_atomic(tmp_path / "r.json", "{}\n")
    assert (tmp_path / "r.json").read_text() == "{}\n" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["entries", "r.json"]
