"""DVC's native sweep: `dvc exp run --queue -S 'train.optimizer=adam,sgd'`, `dvc queue start`,
`dvc exp show --json`, in a real git + DVC copy of the project; then `fitline sweep` over the
same grid in that workspace must agree with the experiments (same stage code, same data)."""

from __future__ import annotations

import csv
import io
import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, make_pipeline_repo, run_cmd, subprocess_env

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT_S = 900


def small_params() -> str:
    """The project's params.yaml (every stage's section) with tiny data and training."""
    y = YAML()
    doc = y.load((ROOT / "params.yaml").read_text())
    doc["data"]["n_samples"] = 600
    doc["train"].update({"hidden": [16], "epochs": 5, "batch_size": 64})
    doc["export"]["latency_repeats"] = 2
    doc["sweep"]["grid"] = {"optimizer": ["adam", "sgd"]}
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def wait_for_queue(repo: Path, timeout: float = QUEUE_TIMEOUT_S) -> str:
    """Poll `dvc queue status` until nothing is queued or running (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        status = run_cmd(["dvc", "queue", "status"], repo).stdout
        tasks = [ln for ln in status.splitlines()[1:] if ln.strip() and not ln.startswith("Worker")]
        if tasks and not any(s in ln for ln in tasks for s in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"dvc queue still busy after {timeout:.0f} s:\n{status}")
        time.sleep(5)


def experiments(repo: Path) -> dict[str, dict]:
    """optimizer -> the experiment's metrics/eval.json, from `dvc exp show --json`."""
    shown = json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            data = exp["revs"][0]["data"]
            optimizer = data["params"]["params.yaml"]["data"]["train"]["optimizer"]
            found[optimizer] = data["metrics"]["metrics/eval.json"]["data"]
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_queued_experiments_then_fitline_sweep_agrees(tmp_path):
    repo = make_pipeline_repo(tmp_path / "repo")
    # the whole params.yaml, not merged over the project's: the sweep grid must be this one alone
    (repo / "params.yaml").write_text(small_params())
    run_cmd(["git", "commit", "-q", "-am", "tiny params"], repo)
    try:
        queued = run_cmd(["dvc", "exp", "run", "--queue", "-S", "train.optimizer=adam,sgd"], repo).stdout
        assert queued.count("Queued experiment") == 2, queued
        run_cmd(["dvc", "queue", "start"], repo)
        status = wait_for_queue(repo)
        assert status.count("Success") == 2, status
        found = experiments(repo)
    finally:
        # the queue's celery worker runs in the background: never leave one behind
        run_cmd(["dvc", "queue", "stop", "--kill"], repo, check=False)
    assert set(found) == {"adam", "sgd"}
    for metrics in found.values():
        assert math.isfinite(metrics["val"]["mse"]) and metrics["fit"]["verdict"]
    assert found["adam"]["val"]["mse"] != found["sgd"]["val"]["mse"]

    # the same grid as an in-process sweep (Prefect with its own temporary server, isolated home)
    run_cmd(["dvc", "repro", "validate"], repo)
    env = {**subprocess_env(), "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_API_PORT": str(_free_port())}
    env.pop("PREFECT_API_URL", None)
    # `fitline sweep`, with the copy's own code (as DVC ran it), not the installed checkout's;
    # it starts the local background server of this isolated home: stopped again below
    cli = [sys.executable, "-c", "from flows.cli import app; app()"]
    try:
        proc = subprocess.run([*cli, "sweep", "--workers", "1"], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=600)
    finally:
        subprocess.run([*cli, "server", "stop"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["optimizer"]: r for r in csv.DictReader((repo / "reports" / "sweep.csv").read_text().splitlines())}
    assert len(rows) == 2 and "lr" not in rows["sgd"]
    for optimizer, metrics in found.items():
        # one thread in the sweep, torch's default in the stage: sums may differ in the last bits
        assert float(rows[optimizer]["val_mse"]) == pytest.approx(metrics["val"]["mse"], rel=1e-3)
        assert rows[optimizer]["verdict"] == metrics["fit"]["verdict"]
