"""Scheduled deployments against the session's Prefect server: prefect.yaml with a process
worker, and `fitline serve`. Each starts real subprocesses, bounded in time and stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cmd
from tests.flows.conftest import toy_runs

DEPLOYMENT = "fitline-pipeline/fitline-nightly"


def _env(api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PREFECT_API_URL"] = api_url
    return env


def _prefect(args: list[str], cwd: Path, api_url: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=cwd, env=_env(api_url),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _read_deployment(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def _wait_for_run(flow_run_id, timeout: float):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final() or time.monotonic() > deadline:
                return run
            time.sleep(1)


@pytest.mark.slow
def test_prefect_yaml_deployment_runs_on_a_process_worker(toy_repo, prefect_server):
    shutil.copy2(ROOT / "prefect.yaml", toy_repo / "prefect.yaml")
    _prefect(["work-pool", "create", "fitline-process", "--type", "process", "--overwrite"], toy_repo, prefect_server)
    _prefect(["deploy", "--all"], toy_repo, prefect_server)

    deployment = _read_deployment(DEPLOYMENT)
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    monitor = _read_deployment("fitline-monitor/fitline-monitor")
    assert [s.schedule.cron for s in monitor.schedules] == ["0 * * * *"] and monitor.entrypoint.endswith("monitor_incoming")
    assert deployment.work_pool_name == "fitline-process"
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(toy_repo)}}]

    from prefect.deployments import run_deployment

    flow_run = run_deployment(DEPLOYMENT, timeout=0)
    # the worker picks the run up, runs it in a subprocess and, with --run-once, exits after it
    _prefect(["worker", "start", "--pool", "fitline-process", "--run-once"], Path("/"), prefect_server, timeout=300)
    run = _wait_for_run(flow_run.id, timeout=30)
    assert run.state.is_completed(), run.state
    assert toy_runs(toy_repo) == ["a", "b", "c", "d"]
    assert "up to date" in run_cmd(["dvc", "status"], toy_repo).stdout


@pytest.mark.slow
def test_fitline_serve_creates_a_scheduled_deployment_and_runs_it(toy_repo, prefect_server):
    env = _env(prefect_server)
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "fitline"), "serve", "--cron", "30 3 * * *", "--name", "served",
         "--root", str(toy_repo), "--retries", "0"],
        cwd=toy_repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        deployment = None
        while deployment is None and time.monotonic() < deadline and serve.poll() is None:
            try:
                deployment = _read_deployment("fitline-pipeline/served")
            except Exception:  # not created yet
                time.sleep(1)
        assert deployment is not None, "fitline serve did not create its deployment"
        assert [s.schedule.cron for s in deployment.schedules] == ["30 3 * * *"]

        from prefect.deployments import run_deployment

        run = run_deployment("fitline-pipeline/served", timeout=240)
        assert run.state.is_completed(), run.state
        assert toy_runs(toy_repo) == ["a", "b", "c", "d"]
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.communicate()
