"""Fixtures of the flow tests: an isolated PREFECT_HOME, one Prefect test server for the whole
session (and no real background server started in-process), and a tiny DVC pipeline (four
stdlib-only stages) in a temporary git + DVC repo."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Prefect reads its settings when first imported: point it at a throwaway home first, so the
# tests never touch the user's ~/.prefect (profiles, SQLite database, local result storage).
if "prefect" in sys.modules:  # pragma: no cover - a guard, not a code path
    raise RuntimeError("prefect was imported before tests/flows/conftest.py could isolate PREFECT_HOME")
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="fitline-prefect-home-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILES_PATH", None)

import pytest  # noqa: E402

from tests.conftest import make_pipeline_repo, run_cmd  # noqa: E402

TOY_STEP = r'''
"""A toy stage: reads its params section and its inputs, writes one JSON file.

Failure injection (files outside DVC's view): toy_fail/<name>.once makes the next run die
like a killed process; toy_fail/<name>.always fails it like a stage's expected error;
toy_fail/<name>.sleep holds it for that many seconds.
"""
import json, os, sys, time
from pathlib import Path

import yaml

def record(event):
    with Path("toy_runs.log").open("a") as f:
        f.write(event + "\n")


name, out, *inputs = sys.argv[1:]
once, always = Path("toy_fail") / f"{name}.once", Path("toy_fail") / f"{name}.always"
if once.exists():
    once.unlink()
    record(name + ":crashed")
    print(f"{name}: simulated crash", file=sys.stderr, flush=True)
    os._exit(3)
if (pause := Path("toy_fail") / f"{name}.sleep").exists():
    time.sleep(float(pause.read_text()))
if always.exists():
    record(name + ":failed")
    print(f"fitline {name}: error: validation failed: {always.read_text().strip()}", file=sys.stderr)
    sys.exit(1)
scale = yaml.safe_load(Path("params.yaml").read_text())[name]["scale"]
total = scale + sum(json.loads(Path(p).read_text())["total"] for p in inputs)
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text(json.dumps({"total": total, "nested": {"scale": scale, "inputs": len(inputs)}}))
record(name)
'''

TOY_DVC_YAML = """\
stages:
  a:
    cmd: python toy/step.py a out/a.json
    deps: [toy/step.py]
    params: [a]
    outs: [out/a.json]
  b:
    cmd: python toy/step.py b out/b.json out/a.json
    deps: [toy/step.py, out/a.json]
    params: [b]
    outs: [out/b.json]
  c:
    cmd: python toy/step.py c metrics/c.json out/b.json
    deps: [toy/step.py, out/b.json]
    params: [c]
    metrics:
      - metrics/c.json:
          cache: false
  d:
    cmd: python toy/step.py d out/d.json out/a.json
    deps: [toy/step.py, out/a.json]
    params: [d]
    outs: [out/d.json]
"""

TOY_PARAMS = "a: {scale: 1}\nb: {scale: 2}\nc: {scale: 3}\nd: {scale: 4}\n"


def make_toy_repo(dest: Path) -> Path:
    """A git + DVC copy of the project whose dvc.yaml is the four-stage toy pipeline a->b->c, a->d."""
    repo = make_pipeline_repo(dest)
    (repo / "toy").mkdir()
    (repo / "toy" / "step.py").write_text(TOY_STEP)
    (repo / "dvc.yaml").write_text(TOY_DVC_YAML)
    (repo / "params.yaml").write_text(TOY_PARAMS)
    (repo / ".gitignore").write_text("__pycache__/\ntoy_fail/\ntoy_runs.log\n")
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-q", "-m", "toy pipeline"], repo)
    return repo


def toy_runs(repo: Path) -> list[str]:
    """Stages whose command actually ran, in order, since the last call (then forgotten)."""
    log = repo / "toy_runs.log"
    if not log.exists():
        return []
    runs = log.read_text().split()
    log.unlink()
    return runs


def set_param(repo: Path, stage: str, scale: int) -> None:
    text = (repo / "params.yaml").read_text()
    lines = [f"{stage}: {{scale: {scale}}}" if ln.startswith(f"{stage}:") else ln for ln in text.splitlines()]
    (repo / "params.yaml").write_text("\n".join(lines) + "\n")


def inject(repo: Path, stage: str, kind: str, text: str = "") -> None:
    (repo / "toy_fail").mkdir(exist_ok=True)
    (repo / "toy_fail" / f"{stage}.{kind}").write_text(text)


@pytest.fixture(scope="session")
def _toy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_repo(tmp_path_factory.mktemp("toy-template") / "repo")


@pytest.fixture
def toy_repo(_toy_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the toy repo (git + DVC initialised once per session, copied per test)."""
    return Path(shutil.copytree(_toy_template, tmp_path / "repo", symlinks=True))


@pytest.fixture(autouse=True)
def _no_real_local_server(monkeypatch):
    """A test that reaches flows.local_server without PREFECT_API_URL would start a real
    background server that outlives it: fail instead (use `prefect_server`, or pass a stand-in
    `command`; the slow test that starts a real one does it in a subprocess)."""
    import flows.local_server

    def refuse(port: int) -> list[str]:
        raise AssertionError("this test would start a real background Prefect server: "
                             "use the prefect_server fixture or a stand-in command")

    monkeypatch.setattr(flows.local_server, "server_command", refuse)


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server (a real API on 127.0.0.1 with a temporary database) per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()
