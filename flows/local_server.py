"""The local Prefect server that `fitline` commands share when PREFECT_API_URL is not set.

Without an API URL, Prefect starts a temporary server inside every process (10-25 s) and
logs tracebacks when it shuts it down. Instead, the first command starts one server in the
background on 127.0.0.1 and every later command finds it and reuses it:

- Its pid is kept in `$PREFECT_HOME/server.pid`, where `prefect server start --background`
  keeps its own, so `prefect server stop` and `fitline server stop` both end it, and a server
  started either way is found by both. The port is read back from the process's command line,
  so a server on another port than the configured one is still found.
- The port is Prefect's own setting `PREFECT_SERVER_API_PORT` (default 4200, what `prefect
  server start` uses). When something other than a Prefect server holds it, the server starts
  on a free port instead (and is found there through its pid file).
- A Prefect server already answering on the port without a pid file (one started in a
  terminal) is used as it is; it is not ours to stop.
- A pid file whose process is gone, or is no longer a Prefect server (a reused pid), is stale
  and removed.
- Starting is done under an exclusive lock (`$PREFECT_HOME/fitline-server.lock`), so two
  commands that start at once start one server.
- PREFECT_HOME is the one Prefect resolves (the user's profile, ~/.prefect by default): the
  server keeps the database that the temporary servers used before, so `fitline history`
  and the UI show the same runs.

The server's own output goes to `$PREFECT_HOME/fitline-server.log`. Nothing here imports
prefect at module level.
"""

from __future__ import annotations

# first: Prefect reads its settings when it is first imported
import flows.prefect_env  # noqa: F401  # isort: skip

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flows.workspace_lock import flock_waiting
from stages.core.errors import FitlineError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PID_FILE = "server.pid"  # prefect's own name (prefect.cli._server_utils.SERVER_PID_FILE_NAME)
LOCK_FILE = "fitline-server.lock"
LOG_FILE = "fitline-server.log"
# the ASGI app on a Prefect server's command line: how a pid is recognised as a Prefect server
SERVER_APP = "prefect.server.api.server:create_app"
PORT_IN_USE_EXIT = 3  # uvicorn's exit code when it cannot bind its port
_POLL_SECONDS = 0.2
_STOP_SECONDS = 15.0


class LocalServerError(FitlineError):
    """The local Prefect server cannot be started, found or stopped."""


@dataclass(frozen=True)
class LocalServer:
    url: str  # http://127.0.0.1:PORT
    pid: int | None  # None: a server found on the port that no pid file names (not ours to stop)
    started: bool  # started by this call
    note: str = ""  # why it is not where it was expected

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def describe(self) -> str:
        """The one line a command prints about the server it uses."""
        if self.pid is None:
            return (f"using the Prefect server already running at {self.url} "
                    "(not started in the background: stop it where it runs)")
        how = "started now" if self.started else "already running"
        note = f"; {self.note}" if self.note else ""
        return f"using the local Prefect server at {self.url} ({how}{note}); `fitline server stop` ends it"


# ---------------------------------------------------------------------------- settings


def prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def configured_port() -> int:
    from prefect.settings import get_current_settings

    return int(get_current_settings().server.api.port)


def startup_timeout() -> float:
    """The wait for a server to answer: Prefect's own start-up timeout (fitline's default is
    120 s, flows/prefect_env.py: a fresh database migrates first)."""
    from prefect.settings import get_current_settings

    return float(get_current_settings().server.ephemeral.startup_timeout_seconds)


def server_command(port: int) -> list[str]:
    """What `prefect server start --background` runs, on 127.0.0.1 and logging warnings only
    (uvicorn's access log would grow by a line per API call)."""
    import prefect
    from prefect.settings import get_current_settings

    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", SERVER_APP, "--host", HOST, "--port", str(port),
            "--timeout-keep-alive", str(get_current_settings().server.api.keepalive_timeout),
            "--log-level", "warning"]


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT__SERVER_EPHEMERAL")}
    env["PREFECT__SERVER_FINAL"] = "1"  # as prefect's CLI sets it for its background server
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


# --------------------------------------------------------------------------- probing


# 127.0.0.1 directly, whatever HTTP(S)_PROXY says
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers `GET {url}/api/health` with `true`."""
    try:
        with _OPENER.open(f"{url}/api/health", timeout=timeout) as resp:
            return resp.status == 200 and resp.read().strip() == b"true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _command_line(pid: int) -> list[str] | None:
    """The process's arguments, or None when there is no such (live) process."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return raw.decode(errors="replace").split("\0")[:-1] or None  # a zombie has none
    try:  # no /proc (macOS)
        out = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split() or None


def server_port(pid: int) -> int | None:
    """The port of the Prefect server running as `pid`; None when `pid` is not a running
    Prefect server (gone, a zombie, or the pid reused by another program)."""
    args = _command_line(pid)
    if not args or SERVER_APP not in args or "--port" not in args:
        return None
    try:
        return int(args[args.index("--port") + 1])
    except (IndexError, ValueError):
        return None


def read_pid(home: Path) -> int | None:
    try:
        return int((home / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is an exited child of this process (no zombie left)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# ----------------------------------------------------------------------------- locking


@contextlib.contextmanager
def server_lock(home: Path, timeout: float) -> Iterator[None]:
    """Exclusive lock on starting/stopping the server of `home` (released by the kernel when
    its holder dies)."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flock_waiting(fd, timeout, busy=lambda: LocalServerError(
            f"another command is starting or stopping the local Prefect server "
            f"(lock {home / LOCK_FILE}); gave up after {timeout:g} s"))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ find, start, stop


def _wait_healthy(url: str, alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if is_healthy(url):
            return True
        if not alive() or time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def find_local_server(home: Path, port: int, timeout: float) -> LocalServer | None:
    """The server of `home`'s pid file (waiting up to `timeout` for one that is starting), else
    a Prefect server answering on `port`, else None. Removes a stale pid file."""
    pid = read_pid(home)
    if pid is not None:
        pid_port = server_port(pid)
        if pid_port is None:
            log.info("removing the stale %s (pid %s is not a running Prefect server)", home / PID_FILE, pid)
            (home / PID_FILE).unlink(missing_ok=True)
        else:
            url = f"http://{HOST}:{pid_port}"
            if _wait_healthy(url, lambda: server_port(pid) is not None, timeout):
                return LocalServer(url, pid, started=False)
            raise LocalServerError(f"the Prefect server of {home / PID_FILE} (pid {pid}) does not answer at "
                                   f"{url}/api/health; `fitline server stop` ends it")
    elif (home / PID_FILE).exists():
        (home / PID_FILE).unlink(missing_ok=True)  # empty or garbled: nothing can be stopped by it
    url = f"http://{HOST}:{port}"
    return LocalServer(url, None, started=False) if is_healthy(url) else None


def _spawn(args: list[str], log_path: Path) -> int:
    """Start `args` detached from this process: its own session (a Ctrl-C of the command that
    started it does not reach it), stdin from /dev/null, output to `log_path`."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(args[0], args, server_env(), file_actions=actions, setsid=True)


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        tail = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


class _Child:
    """A server process this process spawned: whether it still runs, and its exit code."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None

    def running(self) -> bool:
        if self.code is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone
                self.code = -1
            else:
                self.code = os.waitstatus_to_exitcode(status) if done else None
        return self.code is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def start_local_server(home: Path, port: int, timeout: float,
                       command: Callable[[int], list[str]] | None = None) -> LocalServer:
    """Start the server on `port` (a free port when another program holds it); write the pid
    file; wait until it answers. The caller holds `server_lock`. `command(port)` gives the
    server's command line (default: server_command)."""
    command = command or server_command
    note = ""
    if not port_free(port):
        note, port = f"port {port} is taken by another program", free_port()
    log_path = home / LOG_FILE
    for _ in range(3):  # uvicorn exits 3 when another program took the port since the check
        child = _Child(_spawn(command(port), log_path))
        (home / PID_FILE).write_text(str(child.pid))
        url = f"http://{HOST}:{port}"
        if _wait_healthy(url, child.running, timeout):
            return LocalServer(url, child.pid, started=True, note=note)
        (home / PID_FILE).unlink(missing_ok=True)
        if child.running():
            child.kill()
            raise LocalServerError(f"the local Prefect server did not answer at {url}/api/health within "
                                   f"{timeout:g} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); "
                                   f"its log: {log_path}")
        if child.code != PORT_IN_USE_EXIT:
            raise LocalServerError(f"the local Prefect server exited during start-up (exit {child.code}): "
                                   f"{_log_tail(log_path) or 'no output'}; its log: {log_path}")
        note, port = f"port {port} is taken by another program", free_port()
    raise LocalServerError(f"no free port for the local Prefect server; its log: {log_path}")


def ensure_local_server(home: Path | None = None, port: int | None = None, timeout: float | None = None,
                        command: Callable[[int], list[str]] | None = None) -> LocalServer:
    """The local server of `home` (default: Prefect's PREFECT_HOME): found if it runs, else
    started on `port` (default: PREFECT_SERVER_API_PORT)."""
    home = Path(home) if home is not None else prefect_home()
    port = port if port is not None else configured_port()
    timeout = timeout if timeout is not None else startup_timeout()
    with server_lock(home, timeout + 30):
        found = find_local_server(home, port, timeout)
        return found if found is not None else start_local_server(home, port, timeout, command)


def stop_local_server(home: Path | None = None, timeout: float = _STOP_SECONDS) -> str:
    """End the server of `home`'s pid file (SIGTERM, then SIGKILL after `timeout` s); a line
    saying what was done."""
    home = Path(home) if home is not None else prefect_home()
    pid_file = home / PID_FILE
    with server_lock(home, startup_timeout() + 30):  # a start under way finishes first
        pid = read_pid(home)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            return f"no local Prefect server is running (no {pid_file})"
        port = server_port(pid)
        if port is None:
            pid_file.unlink(missing_ok=True)
            return f"no local Prefect server is running (removed the stale {pid_file}: pid {pid} is gone)"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while server_port(pid) is not None and time.monotonic() < deadline:
            _reap(pid)  # our own child (a test's) would stay a zombie otherwise
            time.sleep(_POLL_SECONDS)
        if server_port(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while server_port(pid) is not None and time.monotonic() < deadline + 5:
                _reap(pid)
                time.sleep(_POLL_SECONDS)
        pid_file.unlink(missing_ok=True)
    return f"stopped the local Prefect server at http://{HOST}:{port} (pid {pid})"


def local_server_status(home: Path | None = None) -> str:
    """A line: where the local server runs, or that none does. Starts nothing."""
    home = Path(home) if home is not None else prefect_home()
    pid = read_pid(home)
    port = server_port(pid) if pid is not None else None
    if port is None:
        return f"no local Prefect server is running (no live server in {home / PID_FILE})"
    url = f"http://{HOST}:{port}"
    state = "answering" if is_healthy(url) else "not answering yet"
    return f"the local Prefect server runs at {url} (pid {pid}, {state}); log: {home / LOG_FILE}"


# ------------------------------------------------------------------------ for commands


@contextlib.contextmanager
def prefect_api(announce: Callable[[str], object] = log.info) -> Iterator[str]:
    """Inside the block Prefect talks to a server: the one PREFECT_API_URL names (left as it
    is), else the local server, started if needed (`announce` gets one line saying which).

    The URL is also exported to the environment, so processes started inside the block (a
    process pool's or a local Dask cluster's workers) use the same server.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = ensure_local_server()
    announce(server.describe())
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
