"""training_pipeline against a real Prefect server (the session's test harness) on the toy pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flows.history import read_history
from flows.interactive import interactive_heartbeat
from flows.pipeline import run_pipeline, run_stage, training_pipeline
from flows.stage_run import StageFailed, classify_failure
from flows.workspace_lock import WorkspaceBusy, workspace_lock
from stages.core.errors import FitlineError
from tests.conftest import run_cmd
from tests.flows.conftest import inject, set_param, toy_runs

ALL = ["a", "b", "c", "d"]


def _run(repo, **kw):
    """Run the flow; return (stage -> state name, the flow run's id)."""
    kw.setdefault("retries", 0)
    state = training_pipeline(root=str(repo), return_state=True, **kw)
    return state.result(), state.state_details.flow_run_id


def _dvc_clean(repo) -> bool:
    out = run_cmd(["dvc", "status"], repo).stdout
    return "up to date" in out


def _flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_run_then_everything_cached(toy_repo, prefect_server):
    states, run_id = _run(toy_repo)
    assert states == dict.fromkeys(ALL, "Completed")
    assert toy_runs(toy_repo) == ALL
    # a flow run leaves the workspace as `dvc repro` would: nothing left to do for DVC
    assert _dvc_clean(toy_repo)
    assert "Running stage" not in run_cmd(["dvc", "repro"], toy_repo).stdout

    sha = run_cmd(["git", "rev-parse", "HEAD"], toy_repo).stdout.strip()
    assert f"commit:{sha[:8]}" in _flow_run(run_id).tags
    row = read_history()[-1].row
    assert (row["commit"], row["flow_run"], row["branch"]) == (sha, str(run_id), "main")
    assert row["c.total"] == 6 and row["c.nested.scale"] == 3  # a=1 + b=2 + c=3, from metrics/c.json

    start = time.monotonic()
    states, _ = _run(toy_repo)
    assert states == dict.fromkeys(ALL, "Cached")
    assert toy_runs(toy_repo) == []
    assert time.monotonic() - start < 15


def test_one_git_hint_per_run_and_none_when_nothing_changed(toy_repo, prefect_server):
    state = training_pipeline(root=str(toy_repo), retries=0, return_state=True)
    hints = [line for line in _flow_run_logs(state.state_details.flow_run_id) if "git add" in line]
    assert hints == ["To track the changes with git, run: git add dvc.lock metrics/c.json out/.gitignore"]
    state = training_pipeline(root=str(toy_repo), retries=0, return_state=True)
    assert state.result() == dict.fromkeys(ALL, "Cached")
    assert not [line for line in _flow_run_logs(state.state_details.flow_run_id) if "git add" in line]


def test_busy_workspace_fails_with_a_clear_message(toy_repo, prefect_server):
    with workspace_lock(toy_repo):
        with pytest.raises(WorkspaceBusy, match="another fitline flow run"):
            _run(toy_repo, lock_timeout_seconds=0.5)
    assert toy_runs(toy_repo) == []


@pytest.mark.slow
def test_param_change_reruns_exactly_the_downstream_stages(toy_repo, prefect_server):
    _run(toy_repo)
    toy_runs(toy_repo)
    set_param(toy_repo, "b", 20)
    states, _ = _run(toy_repo)
    assert states == {"a": "Cached", "b": "Completed", "c": "Completed", "d": "Cached"}
    assert toy_runs(toy_repo) == ["b", "c"]
    assert _dvc_clean(toy_repo)


@pytest.mark.slow
def test_after_dvc_repro_everything_cached_and_missing_outs_restored(toy_repo, prefect_server):
    run_cmd(["dvc", "repro"], toy_repo)
    toy_runs(toy_repo)
    b_out = (toy_repo / "out/b.json").read_text()
    (toy_repo / "out/b.json").unlink()
    states, _ = _run(toy_repo)
    assert states == dict.fromkeys(ALL, "Cached")
    assert toy_runs(toy_repo) == []
    assert (toy_repo / "out/b.json").read_text() == b_out  # restored from DVC's cache
    assert _dvc_clean(toy_repo)


@pytest.mark.parametrize(("exc", "retried"), [
    (classify_failure("b", 1, "fitline b: error: validation failed: 3 expectations failed"), False),
    (classify_failure("b", 255, "ERROR: failed to reproduce 'b': failed to run: python b.py, exited with -9"), True),
    (classify_failure("b", 255, "ERROR: Unable to acquire lock. Most likely another DVC process is running"), True),
    (OSError(28, "No space left on device"), True),
], ids=["stage-own-error", "killed", "dvc-lock", "oserror"])
def test_stage_task_retries_all_but_a_stages_own_error(exc, retried):
    """The decision Prefect's task engine makes on a failure (TaskRunEngine.can_retry): the task's
    retry_condition_fn on a Failed state holding the exception; no condition retries everything."""
    from prefect.states import Failed

    state = Failed(data=exc, message=f"Task run encountered unexpected exception: {exc!r}")
    condition = run_stage.retry_condition_fn
    assert run_stage.retries == 2
    assert (condition(run_stage, None, state) if condition is not None else True) is retried


@pytest.mark.slow
def test_transient_failure_is_retried(toy_repo, prefect_server):
    inject(toy_repo, "b", "once")
    states, _ = _run(toy_repo, retries=2, retry_delay_seconds=0.1)
    assert states == dict.fromkeys(ALL, "Completed")
    assert toy_runs(toy_repo) == ["a", "b:crashed", "b", "c", "d"]
    assert _dvc_clean(toy_repo)


@pytest.mark.slow
def test_deterministic_failure_fails_at_once_and_keeps_outputs(toy_repo, prefect_server):
    _run(toy_repo)
    toy_runs(toy_repo)
    before = {p: (toy_repo / p).read_bytes() for p in ("out/b.json", "metrics/c.json", "out/d.json")}
    downstream = ("metrics/c.json", "out/d.json")
    set_param(toy_repo, "b", 20)
    inject(toy_repo, "b", "always", "3 expectations failed")
    start = time.monotonic()
    with pytest.raises(StageFailed, match=r"^stage b: validation failed: 3 expectations failed$"):
        _run(toy_repo, retries=3, retry_delay_seconds=30)
    assert time.monotonic() - start < 30  # no retry delay was waited
    assert toy_runs(toy_repo) == ["b:failed"]  # tried once; c and d never started
    # what comes after b (the "model") is untouched; DVC removed b's own out before running it
    # (as `dvc repro` does), and the good one is still in DVC's cache
    assert {p: (toy_repo / p).read_bytes() for p in downstream} == {p: before[p] for p in downstream}
    run_cmd(["dvc", "checkout", "b"], toy_repo)
    assert (toy_repo / "out/b.json").read_bytes() == before["out/b.json"]


@pytest.mark.slow
def test_two_flow_runs_at_once_on_one_workspace(toy_repo, prefect_server):
    """Two `fitline run` processes: the second waits for the first, then finds everything Cached."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    inject(toy_repo, "a", "sleep", "8")
    env = dict(os.environ, PREFECT_API_URL=prefect_server)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = [str(Path(sys.executable).parent / "fitline"), "run", "--root", str(toy_repo), "--retries", "0"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = toy_repo / ".dvc/tmp/fitline-flow.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out1, _ = first.communicate(timeout=300)
    out2, _ = second.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 0), out1 + out2
    assert "stages: a=Completed, b=Completed, c=Completed, d=Completed" in out1
    assert "waiting up to 600 s for another flow run" in out2
    assert "stages: a=Cached, b=Cached, c=Cached, d=Cached" in out2
    assert toy_runs(toy_repo) == ALL
    assert _dvc_clean(toy_repo)


def _flow_run_events(api_url: str, flow_run_id: str, until: str, timeout: float = 60) -> list[str]:
    """Names of the events the server holds about a flow run, once `until` is among them
    (events reach the server's store asynchronously)."""
    import httpx

    body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
        reply.raise_for_status()
        names = [e["event"] for e in reply.json()["events"]]
        if until in names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_interactive_heartbeat_is_off_unless_chosen():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    assert interactive_heartbeat({}) is None  # Prefect's default (180 s): off for a terminal run
    assert interactive_heartbeat({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "180"}) == 180  # chosen in the env
    assert interactive_heartbeat({"PREFECT_RUNNER_HEARTBEAT_FREQUENCY": "180"}) == 180  # its legacy name
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):
        assert interactive_heartbeat({}) == 60  # chosen in the profile


def test_command_line_run_tags_the_flow_run_only_and_sends_no_heartbeats(toy_repo, prefect_server, monkeypatch):
    """`fitline run` (run_pipeline) turns Prefect's flow-run heartbeats off: they are for
    deployment runs, and waiting for the heartbeat thread to stop costs a no-op run most of its time."""
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    assert run_pipeline(str(toy_repo), retries=0) == dict.fromkeys(ALL, "Completed")
    quiet = read_history()[-1].row["flow_run"]
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")  # a user who wants them
    assert run_pipeline(str(toy_repo), retries=0) == dict.fromkeys(ALL, "Cached")
    beating = read_history()[-1].row["flow_run"]
    assert quiet != beating

    # the commit tags the flow run, not its task runs: a tagged task run takes a round trip
    # for tag concurrency slots (and a lease) around its body
    sha = run_cmd(["git", "rev-parse", "HEAD"], toy_repo).stdout.strip()
    assert f"commit:{sha[:8]}" in _flow_run(quiet).tags
    task_runs = _task_runs(quiet)
    assert sorted(t.name for t in task_runs) == ALL
    assert all(not t.tags for t in task_runs), [t.tags for t in task_runs]

    assert "prefect.flow-run.heartbeat" in _flow_run_events(prefect_server, beating, "prefect.flow-run.heartbeat")
    events = _flow_run_events(prefect_server, quiet, "prefect.flow-run.Completed")
    assert "prefect.flow-run.Completed" in events
    assert "prefect.flow-run.heartbeat" not in events


def _flow_run_logs(flow_run_id) -> list[str]:
    """Every log line the server holds for a flow run and its task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the lines go to the server in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_expected_failure_fails_the_run_with_its_own_line_and_no_traceback(toy_repo, prefect_server):
    inject(toy_repo, "a", "always", "2 expectations failed")
    state = training_pipeline(root=str(toy_repo), retries=0, return_state=True)
    assert state.is_failed()
    assert state.message == "stage a: validation failed: 2 expectations failed"
    with pytest.raises(StageFailed, match="^stage a: validation failed"):
        state.result()
    logs = _flow_run_logs(state.state_details.flow_run_id)
    assert any("fitline a: error: validation failed: 2 expectations failed" in line for line in logs)
    assert not any("Traceback" in line for line in logs), [line for line in logs if "Traceback" in line]


def test_not_a_workspace_is_one_line_and_writes_nothing(tmp_path, prefect_server):
    missing = tmp_path / "nope"
    with pytest.raises(FitlineError, match="nope: no such folder$"):
        run_pipeline(str(missing))
    assert not missing.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(FitlineError, match=r"plain is not a git \+ DVC workspace \(no \.dvc/ folder\)"):
        run_pipeline(str(plain))
    assert list(plain.iterdir()) == []  # no .dvc/tmp lock folder made where none belongs


def test_workspace_without_stages_fails_the_run(toy_repo, prefect_server):
    (toy_repo / "dvc.yaml").unlink()
    state = training_pipeline(root=str(toy_repo), retries=0, return_state=True)
    assert state.is_failed() and state.message.endswith("no dvc.yaml with stages here; nothing to run")


def test_the_model_card_becomes_an_artifact_of_the_run(tmp_path, prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import CARD_KEY, attach_model_card

    @flow
    def attach(root: str) -> bool:
        return attach_model_card(Path(root))

    assert attach(str(tmp_path)) is False  # no card yet: nothing attached
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "model_card.md").write_text("# Model card: y (regression)\n\nfigures\n")
    assert attach(str(tmp_path)) is True
    with get_client(sync_client=True) as client:
        (art,) = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[CARD_KEY])))
    assert art.data.startswith("# Model card: y (regression)")
