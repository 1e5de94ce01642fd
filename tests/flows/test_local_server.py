"""flows/local_server.py: the background Prefect server that commands share without
PREFECT_API_URL. The start/find/stop logic runs against a stand-in server (a few lines of
http.server that answer /api/health and carry a Prefect server's command line); one slow test
starts and stops a real one through the `fitline` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.local_server as ls
from flows.cli import app
from tests.conftest import subprocess_env
from tests.flows.conftest import toy_runs

STAND_IN = r"""
import http.server, sys, time
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
time.sleep(float(args[args.index("--delay") + 1]) if "--delay" in args else 0)
if "--crash" in args:
    print("sqlite3.OperationalError: unable to open database file", flush=True)
    sys.exit(1)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"true" if self.path == "/api/health" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

try:
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
except OSError:
    sys.exit(3)  # as uvicorn does when its port is taken
server.serve_forever()
"""


def stand_in(*extra: str, spawned: list | None = None):
    """A `command` for ensure_local_server: the stand-in server, on the port it is given."""

    def command(port: int) -> list[str]:
        if spawned is not None:
            spawned.append(port)
        return [sys.executable, "-c", STAND_IN, "--factory", ls.SERVER_APP, "--port", str(port), *extra]

    return command


def free_port() -> int:
    return ls.free_port()


@pytest.fixture
def home(tmp_path: Path):
    """A PREFECT_HOME of its own; whatever server its pid file names at the end is stopped."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    yield home
    pid = ls.read_pid(home)
    if pid is not None and ls.server_port(pid) is not None:
        ls.stop_local_server(home, timeout=5)


def _gone(pid: int) -> bool:
    ls._reap(pid)
    return ls.server_port(pid) is None


def test_first_call_starts_the_server_later_calls_reuse_it_and_stop_ends_it(home):
    port = free_port()
    first = ls.ensure_local_server(home, port, timeout=30, command=stand_in())
    assert (first.url, first.started) == (f"http://127.0.0.1:{port}", True)
    assert ls.read_pid(home) == first.pid and ls.is_healthy(first.url)
    assert first.describe() == (f"using the local Prefect server at http://127.0.0.1:{port} (started now); "
                                "`fitline server stop` ends it")

    again = ls.ensure_local_server(home, port, timeout=30, command=stand_in(spawned=(spawned := [])))
    assert (again.pid, again.url, again.started, spawned) == (first.pid, first.url, False, [])
    assert "(already running)" in again.describe()
    assert "answering" in ls.local_server_status(home)

    assert ls.stop_local_server(home) == f"stopped the local Prefect server at {first.url} (pid {first.pid})"
    assert not (home / ls.PID_FILE).exists() and _gone(first.pid) and not ls.is_healthy(first.url)
    assert ls.stop_local_server(home).startswith("no local Prefect server is running")
    assert ls.local_server_status(home).startswith("no local Prefect server is running")


def test_a_stale_pid_file_is_replaced(home):
    gone = subprocess.Popen(["true"])
    gone.wait()
    for stale in (gone.pid, os.getpid()):  # a process that is gone, and a pid reused by another program
        (home / ls.PID_FILE).write_text(str(stale))
        assert ls.local_server_status(home).startswith("no local Prefect server is running")
        server = ls.ensure_local_server(home, free_port(), timeout=30, command=stand_in())
        assert server.started and server.pid != stale and ls.read_pid(home) == server.pid
        ls.stop_local_server(home)
    (home / ls.PID_FILE).write_text(str(gone.pid))
    assert "removed the stale" in ls.stop_local_server(home)
    assert not (home / ls.PID_FILE).exists()


def test_a_port_taken_by_another_program_moves_the_server_to_a_free_port(home):
    with socket.socket() as other:  # listens, but is no Prefect server
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        server = ls.ensure_local_server(home, taken, timeout=30, command=stand_in())
        assert server.started and server.url != f"http://127.0.0.1:{taken}"
        assert f"port {taken} is taken by another program" in server.describe()
        # later commands find it through the pid file, on its own port
        again = ls.ensure_local_server(home, taken, timeout=30, command=stand_in())
        assert (again.url, again.pid, again.started) == (server.url, server.pid, False)


def test_a_server_on_the_port_without_a_pid_file_is_used_but_not_owned(home):
    port = free_port()
    foreign = subprocess.Popen(stand_in()(port))
    try:
        assert ls._wait_healthy(f"http://127.0.0.1:{port}", lambda: foreign.poll() is None, 30)
        server = ls.ensure_local_server(home, port, timeout=30, command=stand_in(spawned=(spawned := [])))
        assert (server.pid, server.started, spawned) == (None, False, [])
        assert "not started in the background" in server.describe()
        assert not (home / ls.PID_FILE).exists()
        assert ls.stop_local_server(home).startswith("no local Prefect server is running")
        assert foreign.poll() is None  # not ours to stop
    finally:
        foreign.kill()
        foreign.wait()


def test_commands_starting_at_once_start_one_server(home):
    port, spawned, found, errors = free_port(), [], [], []

    def command():
        try:
            found.append(ls.ensure_local_server(home, port, timeout=30, command=stand_in("--delay", "1", spawned=spawned)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=command) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(spawned) == 1
    assert sorted(s.started for s in found) == [False, False, True]
    assert len({(s.pid, s.url) for s in found}) == 1


def test_a_server_that_dies_at_start_up_is_one_error_with_its_log(home):
    with pytest.raises(ls.LocalServerError, match=r"exited during start-up \(exit 1\): "
                                                  r"sqlite3.OperationalError: unable to open database file"):
        ls.ensure_local_server(home, free_port(), timeout=30, command=stand_in("--crash"))
    assert not (home / ls.PID_FILE).exists()


def test_a_server_that_never_answers_is_killed(home):
    with pytest.raises(ls.LocalServerError, match=r"did not answer .* within 1 s"):
        ls.ensure_local_server(home, free_port(), timeout=1, command=stand_in("--delay", "60"))
    assert not (home / ls.PID_FILE).exists()


def test_prefect_api_leaves_an_explicit_url_alone(prefect_server, monkeypatch):
    monkeypatch.setattr(ls, "ensure_local_server", lambda *a, **k: pytest.fail("started a local server"))
    said: list[str] = []
    with ls.prefect_api(said.append) as url:
        assert url == prefect_server
    assert said == []


def test_prefect_api_without_a_url_uses_the_local_server(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = ls.LocalServer("http://127.0.0.1:4299", 12345, started=True)
    monkeypatch.setattr(ls, "ensure_local_server", lambda: server)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    said: list[str] = []
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with ls.prefect_api(said.append) as url:
            assert url == PREFECT_API_URL.value() == os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4299/api"
        assert not PREFECT_API_URL.value() and "PREFECT_API_URL" not in os.environ
    assert said == [server.describe()]


def test_cli_server_commands(home, monkeypatch):
    monkeypatch.setattr(ls, "prefect_home", lambda: home)
    result = CliRunner().invoke(app, ["server", "status"])
    assert result.exit_code == 0 and result.output.startswith("no local Prefect server is running")
    (home / ls.PID_FILE).write_text("999999999")
    result = CliRunner().invoke(app, ["server", "stop"])
    assert result.exit_code == 0 and "removed the stale" in result.output


@pytest.mark.slow
def test_real_server_started_by_a_run_reused_by_the_next_and_stopped(toy_repo, tmp_path):
    """Two `fitline run` without PREFECT_API_URL share one background server (a temporary
    PREFECT_HOME and a free port); `fitline server stop` ends it. No tracebacks anywhere."""
    home, port = tmp_path / "home", free_port()
    env = {k: v for k, v in subprocess_env().items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_API_PORT=str(port))
    fitline = [str(Path(sys.executable).parent / "fitline")]
    run = [*fitline, "run", "--root", str(toy_repo), "--retries", "0"]
    url = f"http://127.0.0.1:{port}"

    def call(args):
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)

    try:
        first = call(run)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"using the local Prefect server at {url} (started now)" in first.stderr
        assert toy_runs(toy_repo) == ["a", "b", "c", "d"]
        start = time.monotonic()
        second = call(run)
        took = time.monotonic() - start
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"using the local Prefect server at {url} (already running)" in second.stderr
        assert "stages: a=Cached, b=Cached, c=Cached, d=Cached" in second.stdout + second.stderr
        for out in (first, second):
            assert "Traceback" not in out.stdout + out.stderr and "temporary server" not in out.stderr
        assert took < 20, took  # no server start
        assert ls.is_healthy(url) and ls.read_pid(home) is not None
    finally:
        stop = call([*fitline, "server", "stop"])
    assert stop.returncode == 0 and stop.stdout.startswith(f"stopped the local Prefect server at {url}"), stop
    assert not ls.is_healthy(url) and not (home / ls.PID_FILE).exists()
    assert "Traceback" not in (home / ls.LOG_FILE).read_text()
