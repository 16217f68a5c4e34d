"""harness.env: the code version a record carries."""

from __future__ import annotations


def test_git_state_dirty_means_code_not_records(tmp_path):
    """A changed tracked file marks the tree dirty; a changed or deleted record under results/ does
    not (records are outputs: re-running or retiring committed records is not a code change)."""
    import subprocess

    from harness.env import git_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "results" / "records").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "records" / "a.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "records" / "a.json").unlink()
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    state = git_state(tmp_path)
    assert state["dirty"] is True and len(state["sha"]) == 40
