"""Run one stage through DVC (`dvc repro --single-item <stage>`) and classify how it failed.

Running through DVC leaves dvc.lock and DVC's cache exactly as `dvc repro` leaves them. Two
ways: `repro_stage` starts the `dvc` command for one stage; a `DvcRunner` keeps one helper
process that calls DVC's Python API for each stage it is sent, so a flow run pays the Python +
DVC start once, not once per stage. Stage entry points report expected errors (bad params,
failed validation, a diverged run) as one line `fitline <stage>: error: <message>` on stderr
(stages/core/errors.py); such a failure is deterministic and retrying it cannot help. Anything
else (a killed process, DVC's repo lock held by another process, an OSError) may pass and is
worth a retry. Nothing here imports prefect.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import FitlineError

log = logging.getLogger(__name__)

# what `dvc repro` prints for a stage it actually runs
_RAN = re.compile(r"^Running stage '(?P<stage>[^']+)'", re.M)
_DVC_ERROR = re.compile(r"^ERROR: (?P<msg>.+)$", re.M)
_OUTPUT_TAIL = 20


class StageFailed(FitlineError):
    """A stage's `dvc repro` failed; `deterministic` says a retry would fail the same way."""

    def __init__(self, stage: str, message: str, deterministic: bool, returncode: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.deterministic = deterministic
        self.returncode = returncode

    def __reduce__(self):  # keep the attributes when Prefect pickles the exception into a state
        return (type(self), (self.stage, str(self), self.deterministic, self.returncode))


@dataclass(frozen=True)
class StageRun:
    stage: str
    executed: bool  # DVC ran the command (False: restored from DVC's run-cache or already up to date)
    output: str


def _ran(stage: str, output: str) -> bool:
    return any(m == stage for m in _RAN.findall(output))


def stage_error_line(stage: str, output: str) -> str | None:
    """The stage's own `fitline <stage>: error: ...` line, if it printed one."""
    pattern = re.compile(rf"^fitline {re.escape(stage)}: error: .*$", re.M)
    found = pattern.findall(output)
    return found[-1].strip() if found else None


def classify_failure(stage: str, returncode: int, output: str) -> StageFailed:
    """A StageFailed carrying the stage's own message (deterministic) or DVC's (transient)."""
    line = stage_error_line(stage, output)
    if line is not None:
        message = line.split(": error: ", 1)[1]
        return StageFailed(stage, f"stage {stage}: {message}", deterministic=True, returncode=returncode)
    dvc_errors = _DVC_ERROR.findall(output)
    if dvc_errors:
        detail = dvc_errors[-1].strip()
    else:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-_OUTPUT_TAIL:]
        detail = " | ".join(tail[-3:]) if tail else "no output"
    return StageFailed(stage, f"stage {stage} failed (exit {returncode}): {detail}",
                       deterministic=False, returncode=returncode)


def dvc_env() -> dict[str, str]:
    """The environment for DVC and the stage commands: this interpreter's bin folder first on
    PATH, so `python -m stages.x` in dvc.yaml runs with the same venv as the flow."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def repro_stage(root: str | os.PathLike[str], stage: str,
                on_line: Callable[[str], None] = log.info) -> StageRun:
    """`dvc repro --single-item <stage>` in `root`, streaming its output line by line.

    Raises StageFailed when DVC or the stage command fails.
    """
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    try:
        proc = subprocess.Popen(cmd, cwd=root, env=dvc_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise StageFailed(stage, f"stage {stage}: cannot start dvc: {exc}", False, -1) from exc
    lines: list[str] = []
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.strip():
                on_line(line)
    returncode = proc.wait()
    output = "\n".join(lines)
    if returncode != 0:
        raise classify_failure(stage, returncode, output)
    return StageRun(stage=stage, executed=_ran(stage, output), output=output)


# The helper's code. Passed with -c rather than run as `-m flows.<module>`: the helper runs in
# the workspace, and a workspace may hold its own (older) copy of this package.
_HELPER = """
import json, sys
from dvc.repo import Repo  # importing dvc sets up its console output, as the dvc command prints it

for request in sys.stdin:
    req = json.loads(request)
    returncode = 0
    try:
        with Repo(".") as repo:  # a fresh Repo reads dvc.yaml and dvc.lock as they are now
            # no "To track the changes with git, run: ..." after every stage: the flow says it
            # once at the end of the run (DVC's experiment executor sets the same switch)
            repo.scm_context.quiet = True
            repo.reproduce(req["stage"], single_item=True)
    except Exception as exc:  # reported like the dvc command reports it: one ERROR line
        returncode = 255
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        print(f"ERROR: {exc}{cause}", file=sys.stderr, flush=True)
    sys.stderr.flush()
    print(f"{req['token']} {returncode}", flush=True)
"""


class DvcRunner:
    """One helper process that reproduces stages through DVC's Python API, one at a time.

    The helper's stdout and stderr, which the stage commands inherit, come back through one
    pipe; a line with the request's token ends each answer. If the helper dies, the stage fails
    as transient and the next call starts a new helper.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER], cwd=self.root, env=dvc_env(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", bufsize=1)
        return self._proc

    def repro(self, stage: str, on_line: Callable[[str], None] = log.info) -> StageRun:
        """Like `repro_stage`: reproduce one stage; raises StageFailed."""
        proc = self._start()
        token = uuid.uuid4().hex
        lines: list[str] = []
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"stage": stage, "token": token}) + "\n")
            proc.stdin.flush()
            for raw in proc.stdout:
                line, _, answer = raw.rstrip("\n").partition(token)
                if line.strip():
                    lines.append(line)
                    on_line(line)
                if answer:
                    returncode = int(answer)
                    break
            else:
                raise EOFError
        except (OSError, EOFError):
            returncode = proc.wait()
            self._proc = None
            lines.append(f"the DVC runner process exited with {returncode}")
            raise classify_failure(stage, returncode or -1, "\n".join(lines)) from None
        output = "\n".join(lines)
        if returncode != 0:
            raise classify_failure(stage, returncode, output)
        return StageRun(stage=stage, executed=_ran(stage, output), output=output)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> DvcRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
