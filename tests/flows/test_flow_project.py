"""The project's own dvc.yaml, end to end, as a flow: interchangeable with `dvc repro`, and its
metrics readable per commit with `fitline history`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dag import metrics_paths, read_dag
from flows.history import metric_prefix, read_history
from flows.pipeline import training_pipeline
from tests.conftest import ROOT, SMALL_PARAMS, make_pipeline_repo, run_cmd


def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def small_project_params() -> str:
    """The project's params.yaml (every section DVC asks for) with the tests' small values."""
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(SMALL_PARAMS))
    return yaml.safe_dump(params, sort_keys=False)


@pytest.mark.slow
def test_project_pipeline_as_a_flow(tmp_path, prefect_server):
    repo = make_pipeline_repo(tmp_path / "project", small_project_params())
    stages = [n.name for n in read_dag(repo)]

    states = training_pipeline(root=str(repo), retries=0)
    assert states == dict.fromkeys(stages, "Completed")
    assert "up to date" in run_cmd(["dvc", "status"], repo).stdout
    assert "Running stage" not in run_cmd(["dvc", "repro"], repo).stdout

    assert training_pipeline(root=str(repo), retries=0) == dict.fromkeys(stages, "Cached")

    sha = run_cmd(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    row = read_history()[-1].row
    assert row["commit"] == sha
    for path in metrics_paths(repo):  # every declared metrics file that the stages wrote is recorded
        if (repo / path).exists():
            assert any(k.startswith(metric_prefix(path) + ".") for k in row), path

    env = dict(os.environ, PREFECT_API_URL=prefect_server)
    out = subprocess.run([str(Path(sys.executable).parent / "fitline"), "history"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sha[:8] in out.stdout
