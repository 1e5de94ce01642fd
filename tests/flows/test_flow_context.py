"""A flow run's per-run state reaches its task runs through a context variable
(flows/pipeline.py's shared DVC workspace and runner): Prefect runs a called task in the flow's
thread and a submitted one in a copy of the flow's context, on the worker thread."""

from __future__ import annotations

import threading
from contextvars import ContextVar

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

import flows.pipeline as pipeline

RUN_STATE: ContextVar[str | None] = ContextVar("fitline_test_run_state", default=None)


@task
def read_run_state(_: int = 0) -> tuple[str | None, str]:
    return RUN_STATE.get(), threading.current_thread().name


@flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
def flow_with_run_state(value: str) -> dict[str, list[tuple[str | None, str]]]:
    token = RUN_STATE.set(value)
    try:
        called = [read_run_state()]
        submitted = [read_run_state.submit().result()]
        mapped = [f.result() for f in read_run_state.map([1, 2, 3])]
        return {"called": called, "submitted": submitted, "mapped": mapped, "flow": [read_run_state.fn()]}
    finally:
        RUN_STATE.reset(token)


def test_prefect_runs_tasks_in_the_flows_context(prefect_server):
    seen = flow_with_run_state("run-1")
    flow_thread = seen["flow"][0][1]
    assert [v for v, _ in seen["called"] + seen["submitted"] + seen["mapped"]] == ["run-1"] * 5
    # the submitted ones really ran on other threads: the context was copied there
    assert all(thread != flow_thread for _, thread in seen["submitted"] + seen["mapped"])
    assert RUN_STATE.get() is None  # nothing leaks out of the flow run


def test_stage_tasks_use_the_flow_runs_dvc_runner(toy_repo, prefect_server, monkeypatch):
    """Inside a flow run every stage goes through the run's one DvcRunner; `dvc repro` per stage
    (repro_stage) is only for a stage task called on its own."""

    def no_repro_stage(*args, **kwargs):
        raise AssertionError("a stage task in a flow run did not find the run's DvcRunner")

    monkeypatch.setattr(pipeline, "repro_stage", no_repro_stage)
    state = pipeline.training_pipeline(root=str(toy_repo), retries=0, return_state=True)
    assert state.result() == dict.fromkeys(["a", "b", "c", "d"], "Completed")
    assert pipeline.shared_workspace(toy_repo) is None  # the run's state ended with the run


def test_shared_workspace_is_only_for_its_own_root(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert pipeline.shared_workspace(tmp_path) is None
    with pipeline.shared_dvc_workspace(tmp_path.resolve()) as ws:
        shared = pipeline.shared_workspace(str(tmp_path))
        assert shared is not None and shared.dvc is ws
        assert pipeline.shared_workspace(other) is None
        with pipeline.dvc_workspace(str(tmp_path)) as same:
            assert same is ws
    assert pipeline.shared_workspace(tmp_path) is None


@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")  # no flow run to log to
def test_a_stage_task_on_its_own_runs_dvc_repro(toy_repo, prefect_server):
    stage_task = pipeline.run_stage.with_options(retries=0, result_storage=pipeline.cache_storage(toy_repo))
    result = stage_task("a", str(toy_repo))
    assert result == {"stage": "a", "fingerprint": None, "executed": True}
