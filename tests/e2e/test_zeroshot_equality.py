"""Done-when: prunebench's arc_easy (acc, acc_norm) for dense SmolLM2-135M equals lm-eval's own
`simple_evaluate(model="hf", ...)` on the same local task YAML and the same weights (the HF-format
copy prunebench caches from the GGUF), on the first LIMIT docs to stay fast."""

from __future__ import annotations

from pathlib import Path

import pytest

LIMIT = 20   # 50 took ~4 CPU-minutes (two 200-request runs + two model loads); 20 keeps the suite share small


@pytest.mark.slow
def test_arc_easy_equals_lm_eval_cli_path(smollm2, data_dir, cache_dir, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.evaluation.context import EvalContext
    from harness.evaluation.lm_eval_tasks import prepare_tasks
    from harness.evaluation.zeroshot import evaluate

    section = {"tasks": ["arc_easy"], "limit": LIMIT, "batch_size": 8, "max_length": 2048, "bootstrap_iters": 10}
    ctx = EvalContext(device="cpu", data_dir=data_dir, run_dir=tmp_path, run_id="eq", seed=0,
                      cache_dir=tmp_path)
    ours = evaluate(smollm2.model, smollm2.tokenizer, section, ctx).values
    assert (tmp_path / "eq.zeroshot.jsonl").is_file()
    mine = ours["tasks"]["arc_easy"]
    assert mine["n"] == LIMIT and mine["task_version"] == 1.0 and ours["limit"] == LIMIT

    # lm-eval's own path: its HF model class loads the weights from disk, the task from our YAML.
    hf_dir = Path(cache_dir) / "models" / f"gguf-{smollm2.sha256[:16]}"
    assert (hf_dir / "config.json").is_file()
    include, _ = prepare_tasks(["arc_easy"], data_dir, tmp_path)
    ref = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32,max_length=2048",
                                  tasks=["arc_easy"], batch_size=8, limit=LIMIT, bootstrap_iters=10,
                                  task_manager=TaskManager(include_path=str(include), include_defaults=False),
                                  device="cpu")
    theirs = ref["results"]["arc_easy"]
    assert mine["acc"] == theirs["acc,none"]
    assert mine["acc_norm"] == theirs["acc_norm,none"]
    assert 0.3 < mine["acc"] < 0.9   # SmolLM2-135M is well above chance (0.25) on ARC-Easy
