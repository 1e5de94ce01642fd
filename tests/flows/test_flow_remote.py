"""training_pipeline(pull=..., push=...): runs on different workers share one DVC remote."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.pipeline import parse_args, training_pipeline
from stages.core.errors import FitlineError
from tests.conftest import run_cmd
from tests.flows.conftest import make_toy_repo, toy_runs

ALL = ["a", "b", "c", "d"]


def _run(repo: Path, **kw):
    state = training_pipeline(root=str(repo), retries=0, return_state=True, **kw)
    return state.result()


def _worker(src: Path, dest: Path) -> Path:
    """Another machine's checkout: a git clone (the remote's address comes with .dvc/config)."""
    run_cmd(["git", "clone", "-q", str(src), str(dest)], src.parent)
    return dest


def test_push_on_one_worker_then_pull_on_another_runs_nothing(tmp_path: Path, prefect_server) -> None:
    src = make_toy_repo(tmp_path / "src")
    storage = tmp_path / "storage"
    run_cmd(["dvc", "remote", "add", "-d", "storage", str(storage)], src)
    run_cmd(["git", "commit", "-q", "-am", "dvc remote"], src)

    assert _run(src, pull=True, push=True) == dict.fromkeys(ALL, "Completed")  # an empty remote: nothing to pull
    assert toy_runs(src) == ALL
    assert any(storage.rglob("*")), "the flow pushed nothing"
    run_cmd(["git", "add", "-A"], src)
    run_cmd(["git", "commit", "-q", "-m", "run"], src)

    lone = _worker(src, tmp_path / "lone")
    _run(lone)
    assert toy_runs(lone) == ["a", "b", "d"]  # without the remote: recomputed (c's only output is in git)

    shared = _worker(src, tmp_path / "shared")
    states = _run(shared, pull=True)
    assert toy_runs(shared) == []  # nothing recomputed: the outputs came from the remote
    assert set(states.values()) == {"Cached"}
    assert (shared / "out" / "d.json").read_text() == (src / "out" / "d.json").read_text()
    assert "up to date" in run_cmd(["dvc", "status"], shared).stdout


def test_pull_or_push_without_a_remote_fails_before_any_stage(tmp_path: Path, prefect_server) -> None:
    repo = make_toy_repo(tmp_path / "repo")
    for flag in ("pull", "push"):
        with pytest.raises(FitlineError, match="need a default DVC remote"):
            training_pipeline(root=str(repo), retries=0, **{flag: True})
    assert toy_runs(repo) == []


def test_a_failed_push_fails_the_flow_with_dvcs_message(tmp_path: Path, prefect_server) -> None:
    repo = make_toy_repo(tmp_path / "repo")
    blocker = tmp_path / "storage"
    blocker.write_text("a file where the remote's folder should be")
    run_cmd(["dvc", "remote", "add", "-d", "storage", str(blocker)], repo)
    with pytest.raises(RuntimeError, match=r"dvc push failed \(exit \d+\): ERROR"):
        training_pipeline(root=str(repo), retries=0, push=True)
    assert toy_runs(repo) == ALL  # the stages ran; only the upload failed, and the flow says so


def test_cli_flags() -> None:
    args = parse_args(["--pull", "--push"])
    assert (args.pull, args.push) == (True, True)
    assert (parse_args([]).pull, parse_args([]).push) == (False, False)
