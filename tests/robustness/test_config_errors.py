"""Bad config values: one line naming the key, before any model loads (validation path and CLI)."""

from __future__ import annotations

import pytest

from harness.run import run_experiment
from tests.robustness.conftest import cli, config_error, first_line, tiny

CASES = [
    # schema: every numeric field of every group names its key
    (["eval.ppl.seq_len=0"], "eval.ppl.seq_len must be >= 2, got 0"),
    (["eval.ppl.batch_size=0"], "eval.ppl.batch_size must be >= 1, got 0"),
    (["eval.ppl.max_windows=0"], "eval.ppl.max_windows must be >= 1, got 0"),
    (["eval.ppl.seq_len=abc"], "eval.ppl.seq_len must be an integer, got 'abc'"),
    (["target=unstructured_50", "method=magnitude", "target.ratio=abc"], "target.ratio must be a number, got 'abc'"),
    (["calib.n_samples=abc"], "calib.n_samples must be an integer, got 'abc'"),
    (["calib.seq_len=1"], "calib.seq_len must be >= 2, got 1"),
    (["seed=-1"], "seed must be >= 0, got -1"),
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["runtime.threads=0"], "runtime.threads must be >= 1, got 0"),
    (["prune.batch_size=0"], "prune.batch_size must be >= 1, got 0"),
    (["allocator=owl", "allocator.params.lam=abc"], "allocator.params.lam must be a number, got 'abc'"),
    (["kv=h2o", "eval=kv_quick", "kv.params.budget=abc"], "kv.params.budget must be a number, got 'abc'"),
    (["recovery=lora", "recovery.steps=abc"], "recovery.steps must be an integer, got 'abc'"),
    (["eval=kv_quick", "eval.kv_ppl.chunk=0"], "eval.kv_ppl.chunk must be >= 1, got 0"),
    # lengths beyond the model's positions (read from its config, no weights loaded)
    (["eval.ppl.seq_len=1024"], "eval.ppl.seq_len=1024 exceeds the model's max_position_embeddings=512 (tiny-llama)"),
    (["method=wanda", "target=unstructured_50", "calib.seq_len=600"],
     "calib.seq_len=600 exceeds the model's max_position_embeddings=512 (tiny-llama)"),
    (["model=tiny-opt", "eval.ppl.seq_len=513"],
     "eval.ppl.seq_len=513 exceeds the model's max_position_embeddings=512 (tiny-opt)"),
    # a KV policy with an evaluation that builds no KV cache would label dense numbers
    (["kv=h2o"], "kv=h2o needs an evaluation that builds a KV cache (kv_ppl or kv_memory, e.g. eval=kv_quick); "
                 "this eval runs ppl, which would report dense numbers"),
    # a KV-cache policy named as the method (a config composed with method.name set, or an old record)
    (["method.name=h2o", "kv=h2o", "eval=kv_quick"], "h2o is a KV-cache policy, not a method: use kv=h2o"),
    # calibrating on an evaluation split
    (["method=wanda", "target=unstructured_50", "calib.split=validation"],
     "calib: c4/validation is an evaluation split; calibrating on it inflates the result "
     "(set calib.allow_eval_split=true to do it anyway, recorded)"),
    # cases that already worked: unknown names, bad ratios, N > M
    (["method=wanda", "target=unstructured_50", "target.ratio=1.5"], "target ratio must be in [0, 1), got 1.5"),
    (["method=wanda", "target=nm_2_4", "target.n=5"], "N:M target needs N <= M, got 5:4"),
    (["method=dense", "target=nm_2_4"], "method dense cannot produce pattern 'nm' (supports: none)"),
]


@pytest.mark.parametrize("overrides,message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_one_line_naming_the_key(tmp_path, overrides, message):
    msg = config_error(tiny(tmp_path, *overrides))
    assert msg == message
    assert "\n" not in msg and not (tmp_path / "results" / "records").exists()


def test_calibrating_on_an_eval_split_with_the_flag_is_recorded(tmp_path):
    rec = run_experiment(tiny(tmp_path, "method=wanda", "target=unstructured_50", "calib.split=validation",
                              "calib.allow_eval_split=true"))
    assert rec["status"] == "ok", rec["error"]
    assert rec["calibration"]["split"] == "validation" and rec["calibration"]["allow_eval_split"] is True
    assert rec["config"]["calib"]["allow_eval_split"] is True


def test_cli_schema_error_is_one_line_exit_2(tmp_path):
    proc = cli("model=tiny-llama", "eval.ppl.max_windows=0", f"paths.results_dir={tmp_path}")
    assert proc.returncode == 2
    assert first_line(proc.stderr) == "prunebench: config error: eval.ppl.max_windows must be >= 1, got 0"
    assert "Traceback" not in proc.stderr


def test_cli_unknown_method_is_one_line_with_near_match(tmp_path):
    proc = cli("model=tiny-llama", "method=wandaa", f"paths.results_dir={tmp_path}")
    assert proc.returncode == 2
    assert first_line(proc.stderr).startswith("prunebench: config error: unknown method 'wandaa'; did you mean wanda")


def test_cli_kv_policy_as_method_is_one_line_naming_the_kv_axis(tmp_path):
    proc = cli("model=tiny-llama", "method=h2o", f"paths.results_dir={tmp_path}")
    assert proc.returncode == 2
    assert first_line(proc.stderr) == "prunebench: config error: h2o is not a method but an option of kv: use kv=h2o"


def test_every_input_error_is_a_config_error():
    """Validation and the CLIs catch ConfigError alone: an input error of another base would escape
    as a traceback (or be re-wrapped, losing its type)."""
    from harness.errors import ConfigError, DataError, ModelSourceError, SchemaError, SuiteError, TargetError, \
        UnknownMethodError, UnknownNameError
    from harness.evaluate import EvaluateError
    from harness.evaluation.lm_eval_tasks import TaskDataError
    from harness.export import ExportFormatError
    from harness.records import ResultsDirError

    for cls in (TargetError, DataError, ModelSourceError, UnknownNameError, UnknownMethodError, SuiteError, SchemaError,
                TaskDataError, ResultsDirError, ExportFormatError, EvaluateError):
        assert issubclass(cls, ConfigError), cls


@pytest.mark.parametrize("overrides,cls", [(["eval.ppl.seq_len=abc"], "SchemaError"),
                                           (["output.format=zip"], "ExportFormatError")])
def test_input_errors_keep_their_type_and_one_line(tmp_path, overrides, cls):
    from harness.validate import ConfigError

    with pytest.raises(ConfigError) as info:
        run_experiment(tiny(tmp_path, *overrides))
    assert type(info.value).__name__ == cls and "\n" not in str(info.value)
