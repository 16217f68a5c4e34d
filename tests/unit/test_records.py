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
    path = write_record(tmp_path, _record(metrics={"ppl": float("nan")}))
    assert path == record_path(tmp_path, "abc")
    assert [p.name for p in path.parent.iterdir()] == ["abc.json"]
    data = json.loads(path.read_text())
    assert data["metrics"]["ppl"] == "nan" and data["schema_version"] == "1"
    assert read_record(path)["status"] == "ok"


def test_validation_rejects_incomplete_records():
    with pytest.raises(ValueError, match="lacks keys"):
        validate_record({"run_id": "x"})
    with pytest.raises(ValueError, match="status"):
        write_record("/tmp", _record(status="done"))
