"""flows/stage_run.py: one stage through `dvc repro --single-item`, and failure classification."""

from __future__ import annotations

import pickle
import threading

import pytest

from flows.stage_run import DvcRunner, StageFailed, classify_failure, repro_stage, stage_error_line
from tests.conftest import run_cmd
from tests.flows.conftest import inject, set_param, toy_runs

VALIDATE_FAILED = """\
Running stage 'validate':
> python -m stages.validate
fitline validate: error: validation failed: train: expect_column_values_to_not_be_null(x0) failed
ERROR: failed to reproduce 'validate': failed to run: python -m stages.validate, exited with 1
"""


def test_stage_own_error_is_deterministic():
    exc = classify_failure("validate", 255, VALIDATE_FAILED)
    assert exc.deterministic
    assert str(exc) == "stage validate: validation failed: train: expect_column_values_to_not_be_null(x0) failed"


def test_error_line_of_another_stage_does_not_count():
    assert stage_error_line("train", VALIDATE_FAILED) is None
    assert not classify_failure("train", 255, VALIDATE_FAILED).deterministic


@pytest.mark.parametrize("output", [
    "ERROR: Unable to acquire lock. Most likely another DVC process is running or was terminated abruptly.",
    "Running stage 'train':\n> python -m stages.train\n"
    "ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with -9",
    "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device",
    "",
])
def test_anything_else_is_transient(output):
    exc = classify_failure("train", 255, output)
    assert not exc.deterministic
    assert exc.stage == "train" and "exit 255" in str(exc)


def test_stage_failed_survives_pickling():
    exc = pickle.loads(pickle.dumps(StageFailed("b", "stage b: boom", True, 255)))
    assert (exc.stage, str(exc), exc.deterministic, exc.returncode) == ("b", "stage b: boom", True, 255)


def test_repro_stage_runs_then_skips(toy_repo):
    lines: list[str] = []
    first = repro_stage(toy_repo, "a", on_line=lines.append)
    assert first.executed and "Running stage 'a':" in lines
    second = repro_stage(toy_repo, "a")
    assert not second.executed
    assert toy_runs(toy_repo) == ["a"]


def test_repro_stage_failures(toy_repo):
    inject(toy_repo, "a", "always", "1 expectation failed")
    with pytest.raises(StageFailed, match=r"^stage a: validation failed: 1 expectation failed$") as det:
        repro_stage(toy_repo, "a")
    assert det.value.deterministic
    (toy_repo / "toy_fail/a.always").unlink()

    inject(toy_repo, "a", "once")
    with pytest.raises(StageFailed) as crash:
        repro_stage(toy_repo, "a")
    assert not crash.value.deterministic and "exited with 3" in str(crash.value)
    assert repro_stage(toy_repo, "a").executed
    assert toy_runs(toy_repo) == ["a:failed", "a:crashed", "a"]


def test_dvc_runner_reproduces_stages_in_one_helper_process(toy_repo):
    with DvcRunner(toy_repo) as runner:
        lines: list[str] = []
        assert runner.repro("a", on_line=lines.append).executed
        assert "Running stage 'a':" in lines
        helper = runner._proc
        assert not runner.repro("a").executed  # up to date: DVC skips it

        inject(toy_repo, "b", "always", "x0 has nulls")
        with pytest.raises(StageFailed, match=r"^stage b: validation failed: x0 has nulls$") as det:
            runner.repro("b")
        assert det.value.deterministic
        (toy_repo / "toy_fail/b.always").unlink()
        inject(toy_repo, "b", "once")
        with pytest.raises(StageFailed) as crash:
            runner.repro("b")
        assert not crash.value.deterministic and "exited with 3" in str(crash.value)
        assert runner.repro("b").executed
        assert runner._proc is helper  # one helper served every request

        inject(toy_repo, "c", "sleep", "2")
        threading.Timer(0.5, helper.kill).start()  # the helper dies in the middle of a stage
        with pytest.raises(StageFailed, match="runner process exited") as dead:
            runner.repro("c")
        assert not dead.value.deterministic
        (toy_repo / "toy_fail/c.sleep").unlink()
        assert runner.repro("c").executed  # a new helper took over
        assert runner._proc is not helper

        set_param(toy_repo, "a", 5)
        assert runner.repro("a").executed
        set_param(toy_repo, "a", 1)
        back = runner.repro("a")  # DVC restores the earlier outputs from its run-cache
        assert not back.executed and "is cached - skipping run" in back.output
    assert helper.poll() is not None
    runs = toy_runs(toy_repo)
    assert runs[:4] == ["a", "b:failed", "b:crashed", "b"] and runs.count("a") == 2  # not on the way back
    assert "up to date" not in run_cmd(["dvc", "status"], toy_repo).stdout  # d never ran
    run_cmd(["dvc", "repro", "d"], toy_repo)
    assert "up to date" in run_cmd(["dvc", "status"], toy_repo).stdout


def test_dvc_runner_prints_no_git_hint_per_stage(toy_repo):
    """DVC's "To track the changes with git, run: ..." came after every stage of a flow run;
    the flow says it once, at the end."""
    with DvcRunner(toy_repo) as runner:
        outputs = [runner.repro(stage).output for stage in ("a", "b")]
    assert all("Running stage" in out for out in outputs)
    assert not any("To track the changes with git" in out or "autostage" in out for out in outputs), outputs
