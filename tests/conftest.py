"""Shared fixtures: tiny params, generated datasets, and a real git + DVC copy of the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.core.contracts import ModelConfig

ROOT = Path(__file__).resolve().parents[1]

# no network here: keep every tool's analytics off, in this process and in the subprocesses
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# files of the project that a pipeline copy needs (never .venv, .git or outputs)
PROJECT_FILES = ["stages", "flows", "params.yaml", "dvc.yaml", "pyproject.toml", ".dvcignore", "examples", "data/raw"]


def subprocess_env() -> dict[str, str]:
    """Environment for `dvc` / `python -m stages.x` / `fitline` subprocesses: this venv first on
    PATH, and this checkout on PYTHONPATH, so a command imports the code under test rather than
    the checkout the venv's editable install points at (`python -m` in a pipeline copy still
    imports the copy's code first: the working directory comes before PYTHONPATH)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_cmd(args: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def merged_params(params_text: str) -> str:
    """The project's params.yaml with `params_text` deep-merged over it.

    DVC refuses to run a stage whose params section is missing, so test params only name what
    they change and inherit every other section from the project."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    base = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    return yaml.safe_dump(merge(base, yaml.safe_load(params_text) or {}), sort_keys=False)


def make_pipeline_repo(dest: Path, params_text: str | None = None) -> Path:
    """Copy the project into `dest` as a fresh git + DVC repository (one commit).

    `params_text` is merged over the project's params.yaml (see merged_params)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    if params_text is not None:
        (dest / "params.yaml").write_text(merged_params(params_text))
    (dest / ".gitignore").write_text("__pycache__/\n")
    run_cmd(["git", "init", "-q", "-b", "main"], dest)
    run_cmd(["git", "config", "user.email", "test@fitline.local"], dest)
    run_cmd(["git", "config", "user.name", "fitline test"], dest)
    run_cmd(["dvc", "init", "-q"], dest)
    run_cmd(["dvc", "config", "core.analytics", "false"], dest)
    run_cmd(["git", "add", "-A"], dest)
    run_cmd(["git", "commit", "-q", "-m", "init"], dest)
    return dest


def model_config(**kw: Any) -> ModelConfig:
    """A ModelConfig for tests: a small regression MLP on features a, b, c unless `kw` says
    otherwise (n_features alone names the features x0, x1, ...)."""
    if "n_features" in kw and "feature_names" not in kw:
        kw["feature_names"] = [f"x{i}" for i in range(kw["n_features"])]
    base: dict[str, Any] = {
        "task": "regression", "feature_names": ["a", "b", "c"], "target": "y", "classes": None, "n_features": 3,
        "n_outputs": 1, "model": "mlp", "hidden": [8, 4], "activation": "relu", "dropout": 0.0,
        "scaling": "standard", "loss": "mse", "huber_delta": 1.0,
    }
    return ModelConfig(**{**base, **kw})


SMALL_PARAMS = """\
data:
  kind: friedman
  n_samples: 600
  seed: 7
train:
  hidden: [16]
  epochs: 5
  batch_size: 64
  checkpoint_every: 2
export:
  latency_repeats: 2
"""


@pytest.fixture
def pipeline_repo(tmp_path: Path) -> Path:
    """A git + DVC copy of the project with small, fast params."""
    return make_pipeline_repo(tmp_path / "repo", SMALL_PARAMS)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module's tests, restored after it. The tests' models are
    tiny: a second thread buys nothing, and on a busy shared CPU OpenMP's spin-waiting slows
    training many times over."""
    import torch  # here, not at the top: most test modules never load torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
