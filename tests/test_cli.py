"""`fitline repro`: DVC's reproduce with this venv's Python on PATH, DVC's arguments passed through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import ROOT, SMALL_PARAMS, make_pipeline_repo

VENV_BIN = Path(sys.executable).parent


def test_repro_passes_dvcs_arguments_and_puts_this_python_first_on_path(monkeypatch):
    calls = []

    def call(args, env=None):
        calls.append((args, env))
        return 0

    monkeypatch.setattr(subprocess, "call", call)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = CliRunner().invoke(app, ["repro", "-f", "train", "--dry"])
    assert result.exit_code == 0, result.output
    (args, env), = calls
    assert args == [sys.executable, "-m", "dvc", "repro", "-f", "train", "--dry"]
    assert env["PATH"].split(os.pathsep)[:2] == [str(VENV_BIN), "/usr/bin"]


def test_repro_without_an_activated_venv_runs_the_stages_with_the_venvs_python(tmp_path):
    """The README's `.venv/bin/fitline repro` from a shell whose PATH has no venv (nor a
    `python`): the stage commands still find the venv's Python and its packages."""
    repo = make_pipeline_repo(tmp_path / "repo", SMALL_PARAMS)
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=str(ROOT))

    def fitline_repro(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "fitline"), "repro", *args], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)

    first = fitline_repro("generate")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'generate'" in first.stdout and "validate" not in first.stdout
    assert (repo / "data/meta.json").is_file()
    forced = fitline_repro("-f", "generate")
    assert forced.returncode == 0 and "Running stage 'generate'" in forced.stdout, forced.stdout + forced.stderr
