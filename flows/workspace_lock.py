"""One flow run per workspace at a time: an exclusive `flock` on .dvc/tmp/fitline-flow.lock.

DVC's own repo lock is held only while one `dvc repro` runs, so two flow runs would interleave
their stages and write one dvc.lock from two DAG walks. The flow run holds this lock from
before it reads the DAG until its artifacts are recorded. flock is released by the kernel when
the holder dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from stages.core.contracts import FLOW_LOCK_PATH
from stages.core.errors import FitlineError

log = logging.getLogger(__name__)

LOCK_NAME = FLOW_LOCK_PATH
_POLL_SECONDS = 0.2


class WorkspaceBusy(FitlineError):
    """Another flow run holds the workspace lock for longer than we may wait."""


def flock_waiting(fd: int, timeout: float, busy: Callable[[], Exception],
                  on_first_wait: Callable[[], object] | None = None) -> None:
    """An exclusive flock on `fd`, waiting up to `timeout` seconds; raises busy() when it runs out
    (the kernel releases the lock when its holder dies)."""
    deadline = time.monotonic() + max(timeout, 0.0)
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise busy() from None
            if not waited and on_first_wait is not None:
                on_first_wait()
            waited = True
            time.sleep(_POLL_SECONDS)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return text or "unknown"


@contextlib.contextmanager
def workspace_lock(root: str | os.PathLike[str], timeout: float = 0.0,
                   on_wait: Callable[[str], object] = log.info) -> Iterator[Path]:
    """Hold the workspace's flow lock; wait up to `timeout` seconds for another run to finish.

    `on_wait` gets one message when we have to wait.

    Raises WorkspaceBusy naming the lock file and the holder's pid when the wait runs out.
    """
    path = Path(root) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flock_waiting(
            fd, timeout,
            busy=lambda: WorkspaceBusy(
                f"another fitline flow run (pid {_holder(path)}) is running in {Path(root).resolve()}; "
                f"gave up after waiting {timeout:g} s for {path}"),
            on_first_wait=lambda: on_wait(f"waiting up to {timeout:g} s for another flow run "
                                          f"(pid {_holder(path)}) to release {path}"))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
