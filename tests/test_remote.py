"""Shared artifact storage: a DVC remote (a local folder here; S3 or GCS for users) lets a fresh
clone fetch every stage's outputs with `dvc pull` and then reproduce nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import SMALL_PARAMS, make_pipeline_repo, run_cmd


def add_remote(repo: Path, storage: Path) -> None:
    """`dvc remote add -d storage <dir>`, committed: a clone finds the remote in .dvc/config."""
    run_cmd(["dvc", "remote", "add", "-d", "storage", str(storage)], repo)
    run_cmd(["git", "add", ".dvc/config"], repo)
    run_cmd(["git", "commit", "-q", "-m", "dvc remote: storage"], repo)


def commit_run(repo: Path, message: str) -> None:
    """Commit dvc.lock, the .gitignore entries DVC wrote and the git-tracked (cache: false) outputs."""
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-q", "-m", message], repo)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clone(src: Path, dest: Path) -> Path:
    run_cmd(["git", "clone", "-q", str(src), str(dest)], src.parent)
    run_cmd(["dvc", "config", "--local", "core.analytics", "false"], dest)
    return dest


def assert_nothing_to_do(repo: Path, *targets: str) -> None:
    status = run_cmd(["dvc", "status", *targets], repo).stdout
    assert "up to date" in status, status
    repro = run_cmd(["dvc", "repro", *targets], repo)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date" in repro.stdout, repro.stdout


def test_push_then_pull_in_a_clone_restores_a_stage_without_work(tmp_path: Path) -> None:
    """One stage (generate) round trip: the fast check of the remote wiring."""
    src = make_pipeline_repo(tmp_path / "src", SMALL_PARAMS)
    add_remote(src, tmp_path / "storage")
    run_cmd(["dvc", "repro", "generate"], src)
    run_cmd(["dvc", "push", "generate"], src)
    commit_run(src, "generate")
    assert any((tmp_path / "storage").rglob("*")), "dvc push stored nothing"

    dst = clone(src, tmp_path / "dst")
    assert not (dst / "data" / "train.parquet").exists()
    before = run_cmd(["dvc", "status", "generate"], dst).stdout
    assert "not in cache" in before, before  # without the remote the clone would have to regenerate
    run_cmd(["dvc", "pull", "generate"], dst)
    for name in ("train.parquet", "val.parquet", "test.parquet", "meta.json"):
        assert digest(dst / "data" / name) == digest(src / "data" / name), name
    assert_nothing_to_do(dst, "generate")


@pytest.mark.slow
def test_whole_pipeline_round_trip_through_the_remote(tmp_path: Path) -> None:
    """`dvc repro` + `dvc push` in one checkout; a fresh clone does `dvc pull` and has nothing
    to reproduce: same model bytes, same metrics, `dvc status` clean."""
    src = make_pipeline_repo(tmp_path / "src", SMALL_PARAMS)
    add_remote(src, tmp_path / "storage")
    run_cmd(["dvc", "repro"], src)
    run_cmd(["dvc", "push"], src)
    commit_run(src, "pipeline run")

    dst = clone(src, tmp_path / "dst")
    run_cmd(["dvc", "pull"], dst)
    assert_nothing_to_do(dst)
    for out in ("models/model.pt", "models/model.onnx", "models/model.int8.onnx", "metrics/eval.json",
                "reports/validation.json", "data/train.parquet"):
        assert digest(dst / out) == digest(src / out), out
    # the clone's workspace is what git and DVC both recorded: nothing modified or untracked
    assert run_cmd(["git", "status", "--porcelain"], dst).stdout == ""
