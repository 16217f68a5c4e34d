"""Task-file conversion: every local zero-shot file becomes the columns its built-in lm-eval task
reads, and the generated YAMLs build lm-eval tasks whose prompts/targets come out of those columns."""

from __future__ import annotations

import json

import pytest

from harness.evaluation.lm_eval_tasks import TASKS, TaskDataError, check_local_tasks, convert_task, prepare_tasks


def _rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


EXPECTED_ROWS = {"boolq": 3270, "rte": 277, "hellaswag_llamacpp": 10042, "winogrande": 1267, "arc_easy": 2376,
                 "arc_challenge": 1172, "openbookqa": 500, "piqa": 1838, "lambada_openai": 5153}


@pytest.mark.parametrize("name", list(TASKS))
def test_conversion_has_builtin_columns(name, data_dir, tmp_path):
    info = convert_task(name, data_dir, tmp_path)
    rows = _rows(info["path"])
    assert len(rows) == info["rows"] == EXPECTED_ROWS[name]
    for r in rows[:200]:
        assert set(TASKS[name].columns) <= set(r), (name, sorted(r))
    r = rows[0]
    if name in ("arc_easy", "arc_challenge", "openbookqa"):
        for r in rows:   # doc_to_target is choices.label.index(answerKey)
            assert isinstance(r["choices"]["text"], list) and len(r["choices"]["text"]) == len(r["choices"]["label"])
            assert r["answerKey"].lstrip() in r["choices"]["label"]
        assert isinstance(r["question" if name != "openbookqa" else "question_stem"], str)
    elif name == "winogrande":
        assert {x["answer"] for x in rows} == {"1", "2"} and all("_" in x["sentence"] for x in rows)
    elif name in ("piqa", "boolq", "rte"):
        assert {x["label"] for x in rows} == {0, 1}
    elif name == "hellaswag_llamacpp":
        assert all(len(x["endings"]) == 4 and x["label"] in "0123" for x in rows)
        assert r["activity_label"] == "Roof shingle removal" and r["ctx_a"].startswith("A man is sitting")
    elif name == "lambada_openai":
        assert all(len(x["text"].split(" ")) > 1 for x in rows)


def test_conversion_is_cached_and_keyed_by_sources(data_dir, tmp_path):
    a = convert_task("piqa", data_dir, tmp_path)
    b = convert_task("piqa", data_dir, tmp_path)
    assert a["path"] == b["path"] and a["sources_sha256"] in a["path"].name or a["sources_sha256"][:12] in a["path"].name


def test_piqa_labels_must_align(tmp_path):
    from harness.evaluation.lm_eval_tasks import convert_piqa

    (tmp_path / "v.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    (tmp_path / "l.lst").write_text("0\n1\n")
    with pytest.raises(TaskDataError, match="1 rows but 2 labels"):
        list(convert_piqa(tmp_path / "v.jsonl", tmp_path / "l.lst"))


def test_unknown_task_and_missing_data_fail_early(tmp_path):
    with pytest.raises(TaskDataError, match="unknown zero-shot task"):
        check_local_tasks({"tasks": ["arc_eazy"]}, tmp_path)
    with pytest.raises(TaskDataError, match="missing local file"):
        check_local_tasks({"tasks": ["arc_easy"]}, tmp_path)


def test_generated_yamls_build_builtin_tasks(data_dir, tmp_path):
    """TaskManager(include_defaults=False) builds all nine from our YAMLs; prompts are the built-ins'."""
    from lm_eval.tasks import TaskManager, get_task_dict

    include, _ = prepare_tasks(list(TASKS), data_dir, tmp_path)
    tasks = get_task_dict(list(TASKS), TaskManager(include_path=str(include), include_defaults=False))
    assert set(tasks) == set(TASKS)
    for name, task in tasks.items():
        docs = list(task.eval_docs)
        assert len(docs) == EXPECTED_ROWS[name], name
        doc = docs[0]
        text, target = task.doc_to_text(doc), task.doc_to_target(doc)
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(doc)
            assert 0 <= int(target if name != "winogrande" else text) < len(choices)
    arc = tasks["arc_easy"]
    doc = next(iter(arc.eval_docs))
    assert arc.doc_to_text(doc) == ("Question: Which statement best explains why photosynthesis is the "
                                    "foundation of most food webs?\nAnswer:")
    assert arc.doc_to_target(doc) == 0
    assert tasks["boolq"].doc_to_choice(next(iter(tasks["boolq"].eval_docs))) == ["no", "yes"]
