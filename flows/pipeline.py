"""The `training_pipeline` flow: the DVC stages of dvc.yaml as Prefect tasks.

The flow reads the DAG from dvc.yaml through DVC (flows/dag.py) and runs each stage through
DVC's own reproduce, one stage per call (`dvc repro --single-item`; in a flow run, through one
helper process that keeps DVC imported, flows/stage_run.DvcRunner), so dvc.lock ends exactly as
`dvc repro` leaves it and the two are interchangeable on one workspace.

Caching. The cache key of a stage is its DVC fingerprint: cmd, params values, deps' content
hashes, and the outs' hashes in dvc.lock (flows/dag.StageState). A key exists only for a state
DVC has recorded, i.e. when `dvc status` has nothing to do for the stage; a stale stage gets no
key and runs. A recorded state that has no Prefect record yet (a stage the flow just ran, or
one `dvc repro` ran) is adopted into Prefect's cache under its key, so after either tool the
flow shows every stage Cached. Outs missing from the workspace are restored from DVC's cache
(`dvc checkout <stage>`) before the key is computed; an out that cannot be restored makes the
stage stale, so it runs. Why not key on the inputs alone: Prefect would then return a hit for
inputs it saw once even when dvc.lock and the outs now hold another state (a param reverted,
an older commit checked out), and the workspace would not match what the run reported.

Retries are declared on the task; `retry_condition_fn` refuses a retry for a stage's own
expected error (`fitline <stage>: error: ...`), so those fail the flow at once.
"""

from __future__ import annotations

# first: Prefect reads its settings when it is first imported
import flows.prefect_env  # noqa: F401  # isort: skip

import argparse
import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import Failed
from prefect.tasks import exponential_backoff

from flows.dag import DvcWorkspace, check_workspace
from flows.history import Commit, git_commit, metrics_row, record_run, uncommitted
from flows.interactive import command_line_run
from flows.local_server import prefect_api
from flows.stage_run import DvcRunner, StageFailed, repro_stage
from flows.workspace_lock import workspace_lock
from stages.core.contracts import MODEL_CARD_PATH, PIPELINE_CACHE_DIR
from stages.core.errors import FitlineError

log = logging.getLogger(__name__)

FLOW_NAME = "fitline-pipeline"
# Prefect's cache records of a workspace live beside DVC's own temporary state: they describe
# that workspace's dvc.lock, and .dvc/tmp is never committed.
CACHE_DIR = PIPELINE_CACHE_DIR
NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC, as in prefect.yaml
_KEY = re.compile(r"^[A-Za-z0-9_.-]+-[0-9a-f]{64}$")
# the Prefect loggers that log a failed run's exception
RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class ExpectedErrorsWithoutTraceback(logging.Filter):
    """Drops the traceback from Prefect's run-log records of an expected error (a FitlineError:
    bad params, a failed validation, a busy workspace ...), keeping their one-line message.

    Prefect logs a failed task's exception with its traceback when the task has no retries
    (`--retries 0`); for a stage's own error that is fitline's plumbing, not the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FitlineError):
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_filters() -> None:
    """Add `ExpectedErrorsWithoutTraceback` to Prefect's run loggers, once per process.

    Called where a run starts (the flow, a stage task called on its own) rather than on import,
    so importing this module leaves logging as it was."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedErrorsWithoutTraceback) for f in logger.filters):
            logger.addFilter(ExpectedErrorsWithoutTraceback())


def cache_storage(root: str | os.PathLike[str]) -> Path:
    """Where the stage tasks' cache records live (a Path: Prefect makes it a local storage)."""
    return Path(root).resolve() / CACHE_DIR


def cache_key(stage: str, fingerprint: str) -> str:
    """A stage's cache record name: the fingerprint, prefixed by the stage for people reading
    the folder (`sub/dvc.yaml:name` would otherwise make sub-folders)."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stage)}-{fingerprint}"


def prune_cache(root: str | os.PathLike[str]) -> None:
    """Drop records that are not fingerprint keys: Prefect stores the result of a stale stage's
    run under a random name, and nothing ever reads it again."""
    folder = cache_storage(root)
    for path in folder.glob("*") if folder.is_dir() else ():
        if path.is_file() and not _KEY.match(path.name):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class SharedWorkspace:
    """A flow run's one DVC view of its workspace and its one DVC runner process, shared by its
    stage tasks (they run one after another): DVC is opened and started once per run, not once
    per stage."""

    dvc: DvcWorkspace
    runner: DvcRunner

    @property
    def root(self) -> Path:
        return self.dvc.root


# The current flow run's SharedWorkspace. A context variable rather than a module-level dict
# keyed by workspace: it belongs to the flow run that set it, and its task runs see it because
# Prefect runs a task in the calling flow's context (a called task in the flow's own thread, a
# submitted one in a copy of its context: tests/flows/test_flow_context.py checks both).
_SHARED_WORKSPACE: ContextVar[SharedWorkspace | None] = ContextVar("fitline_shared_workspace", default=None)


@contextlib.contextmanager
def shared_dvc_workspace(root: Path) -> Iterator[DvcWorkspace]:
    """Share one DVC view and runner of `root` with the stage tasks called inside the block."""
    shared = SharedWorkspace(DvcWorkspace(root), DvcRunner(root))
    token = _SHARED_WORKSPACE.set(shared)
    try:
        yield shared.dvc
    finally:
        _SHARED_WORKSPACE.reset(token)
        shared.runner.close()
        shared.dvc.close()


def shared_workspace(root: str | os.PathLike[str]) -> SharedWorkspace | None:
    """The calling flow run's SharedWorkspace of `root`, or None (a task run outside a flow)."""
    shared = _SHARED_WORKSPACE.get()
    return shared if shared is not None and shared.root == Path(root).resolve() else None


@contextlib.contextmanager
def dvc_workspace(root: str) -> Iterator[DvcWorkspace]:
    """The flow run's shared DVC view of `root`, or a view of its own outside a flow run."""
    shared = shared_workspace(root)
    if shared is not None:
        yield shared.dvc
        return
    with DvcWorkspace(root) as ws:
        yield ws


def stage_result(name: str, fingerprint: str | None, executed: bool) -> dict[str, Any]:
    """What a stage task returns (and what its cache record holds)."""
    return {"stage": name, "fingerprint": fingerprint, "executed": executed}


@dataclass
class DvcFingerprint(CachePolicy):
    """Cache key = the stage's DVC fingerprint, for stages whose state dvc.lock records."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        root, name = inputs["root"], inputs["stage"]
        logger = get_run_logger()
        with dvc_workspace(root) as ws:
            state = ws.state(name)
            if state.restorable:
                logger.info("%s: restoring %s from DVC's cache", name, ", ".join(sorted(state.outs_status)))
                try:
                    ws.checkout(name)
                except Exception as exc:  # cache gone or unreadable: the stage re-runs instead
                    logger.warning("%s: dvc checkout failed (%s); the stage runs", name, exc)
                state = ws.state(name)
        if not state.up_to_date:
            return None
        key = cache_key(name, state.fingerprint)
        store = task_ctx.result_store
        if not store.exists(key):
            # a state DVC recorded (the flow or `dvc repro` ran the stage): adopt it, so this
            # task is Cached exactly when DVC has nothing to do
            store.write(obj=stage_result(name, state.fingerprint, executed=False), key=key)
        return key


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn: retry anything but a stage's own expected (deterministic) error."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not (isinstance(exc, StageFailed) and exc.deterministic)


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    cache_policy=DvcFingerprint(),
    persist_result=True,
    result_serializer="json",  # the records in .dvc/tmp/fitline-prefect-cache stay readable
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_condition_fn=is_transient,
)
def run_stage(stage: str, root: str) -> dict[str, Any]:
    """Run one stage through DVC (`dvc repro --single-item`); raises StageFailed.

    In a flow run, through the run's DvcRunner; on its own, through the `dvc` command."""
    install_log_filters()
    logger = get_run_logger()
    shared = shared_workspace(root)
    with dvc_workspace(root) as ws:
        ws.invalidate()  # whatever happens next, the workspace changes under DVC's view
        if shared is not None:
            run = shared.runner.repro(stage, on_line=logger.info)
        else:
            run = repro_stage(root, stage, on_line=logger.info)
        if not run.executed:
            logger.info("%s: DVC restored it from its run-cache or found it up to date", stage)
        # no fingerprint: the stage just changed, and its new state is keyed by the next run
        return stage_result(stage, None, executed=run.executed)


def require_default_remote(root: Path) -> str:
    """The workspace's default DVC remote; pull/push without one would quietly do nothing."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
    if not name:
        raise FitlineError(f"{root}: --pull/--push need a default DVC remote "
                           "(dvc remote add -d storage s3://bucket/path, then commit .dvc/config)")
    return name


@task(name="dvc-remote", task_run_name="dvc {command}", retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=5))
def sync_remote(root: str, command: str) -> None:
    """`dvc pull` before a run (what another worker pushed is fetched, not recomputed; what the
    remote lacks is left to the stages) or `dvc push` after it, to the default DVC remote."""
    args = [sys.executable, "-m", "dvc", command, *(["--allow-missing"] if command == "pull" else [])]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True)
    get_run_logger().info("dvc %s: %s", command, (proc.stdout.strip().splitlines() or ["done"])[-1])
    if proc.returncode:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.splitlines()[-1:]
        raise RuntimeError(f"dvc {command} failed (exit {proc.returncode}): {' '.join(errors)[:500]}")


def _tag_flow_run(tag: str) -> None:
    """Add `tag` to the current flow run (it is created before we know the commit); its task
    runs stay untagged (see run_pipeline)."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    from prefect.client.orchestration import get_client

    if tag in ctx.flow_run.tags:  # a rerun of the same flow run (a retried deployment run)
        return
    tags = [*ctx.flow_run.tags, tag]
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id=ctx.flow_run.id, tags=tags)


@flow(name=FLOW_NAME)
def training_pipeline(root: str = ".", retries: int = 2, retry_delay_seconds: float = 5.0,
                      lock_timeout_seconds: float = 600.0, pull: bool = False, push: bool = False) -> dict[str, str]:
    """Run every stage of dvc.yaml in dependency order; return each stage's final state name.

    Args:
        root: the DVC workspace (a git checkout with dvc.yaml).
        retries: retries of a stage after a transient failure.
        retry_delay_seconds: the first retry's delay; each further retry doubles it.
        lock_timeout_seconds: how long to wait for another flow run on this workspace.
        pull, push: `dvc pull` from the default DVC remote before the stages, `dvc push` after
            them, so runs on any worker share one artifact cache.

    An expected failure (bad params, a failed validation, a diverged run, a busy or missing
    workspace: a FitlineError) fails the run with its one-line message and is raised to the
    caller as it is; returned as a Failed state, since Prefect logs a full traceback for an
    exception that leaves the flow function.
    """
    install_log_filters()
    try:
        return _pipeline(root, retries, retry_delay_seconds, lock_timeout_seconds, pull, push)
    except FitlineError as exc:
        return Failed(message=str(exc), data=exc)  # type: ignore[return-value]


def _pipeline(root: str, retries: int, retry_delay_seconds: float, lock_timeout_seconds: float,
              pull: bool, push: bool) -> dict[str, str]:
    """The body of `training_pipeline` (in its flow run)."""
    logger = get_run_logger()
    workspace = check_workspace(root)
    commit = git_commit(workspace)
    _tag_flow_run(commit.tag)
    backoff = exponential_backoff(backoff_factor=retry_delay_seconds)
    stage_task = run_stage.with_options(retries=retries, retry_delay_seconds=backoff,
                                        result_storage=cache_storage(workspace))
    sync = sync_remote.with_options(retries=retries, retry_delay_seconds=backoff)
    if pull or push:
        logger.info("DVC remote: %s", require_default_remote(workspace))
    with workspace_lock(workspace, timeout=lock_timeout_seconds, on_wait=logger.warning), \
            shared_dvc_workspace(workspace) as ws:
        if pull:
            sync(str(workspace), "pull")
            ws.invalidate()
        states = _run_stages(ws, stage_task)
        _record_metrics(ws, commit, states)
        if any(state != "Cached" for state in states.values()):
            _git_hint(ws)
        if push:
            sync(str(workspace), "push")
        prune_cache(workspace)
    logger.info("stages: %s", ", ".join(f"{k}={v}" for k, v in states.items()))
    return states


def _run_stages(ws: DvcWorkspace, stage_task: Any) -> dict[str, str]:
    """Run the stage task for each stage in dependency order; stop at the first failure by
    raising its error (a StageFailed), so the flow fails with the stage's message."""
    logger = get_run_logger()
    states: dict[str, str] = {}
    for node in ws.nodes():
        state = stage_task(node.name, str(ws.root), return_state=True)
        states[node.name] = state.name
        if state.is_failed():
            logger.error("stage %s failed; stages after it are not run", node.name)
            state.result()
    return states


def _git_hint(ws: DvcWorkspace) -> None:
    """DVC's "To track the changes with git" once per run, not once per stage (the DVC runner
    silences it)."""
    changed = uncommitted(ws.root, ws.git_outs())
    if changed:
        get_run_logger().info("To track the changes with git, run: git add %s", " ".join(changed))


def _record_metrics(ws: DvcWorkspace, commit: Commit, states: dict[str, str]) -> None:
    """The run's metrics row and report, as artifacts of the current flow run."""
    ctx = FlowRunContext.get()
    flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    record_run(metrics_row(ws.root, commit, ws.metrics_paths(), flow_run=flow_run_id), states)
    attach_model_card(ws.root)


CARD_KEY = "fitline-model-card"


def attach_model_card(root: Path) -> bool:
    """The run's model card (the card stage's markdown) as a Prefect artifact, when there is one."""
    from prefect.artifacts import create_markdown_artifact

    card = Path(root) / MODEL_CARD_PATH
    if not card.exists():
        return False
    create_markdown_artifact(markdown=card.read_text(), key=CARD_KEY, description=f"model card ({MODEL_CARD_PATH})")
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flows.pipeline", description=training_pipeline.description)
    p.add_argument("--root", default=".", help="DVC workspace (default: the current folder)")
    p.add_argument("--retries", type=int, default=2, help="retries after a transient stage failure")
    p.add_argument("--retry-delay", type=float, default=5.0, help="first retry delay in seconds (doubles)")
    p.add_argument("--lock-timeout", type=float, default=600.0,
                   help="seconds to wait for another flow run on the same workspace")
    p.add_argument("--pull", action="store_true", help="dvc pull from the default remote before the run")
    p.add_argument("--push", action="store_true", help="dvc push to the default remote after the run")
    return p.parse_args(argv)


def run_pipeline(root: str = ".", retries: int = 2, retry_delay_seconds: float = 5.0,
                 lock_timeout_seconds: float = 600.0, pull: bool = False, push: bool = False,
                 announce: Callable[[str], object] = log.info) -> dict[str, str]:
    """Run the flow (what `fitline run` and `python -m flows.pipeline` do).

    Without PREFECT_API_URL the run uses the local Prefect server (flows/local_server.py),
    started if needed; `announce` gets the line that says which.

    The flow tags its own run with the commit (`_tag_flow_run`). Not `with prefect.tags(...)`
    around the call: that tags every task run too, and a tagged task run asks the server for
    tag concurrency slots (and holds a lease) around its body, a round trip per stage.
    """
    workspace = check_workspace(root)  # before a flow run is created for a mistyped --root
    with prefect_api(announce), command_line_run():
        return training_pipeline(root=str(workspace), retries=retries, retry_delay_seconds=retry_delay_seconds,
                                 lock_timeout_seconds=lock_timeout_seconds, pull=pull, push=push)


def serve_pipeline(root: str = ".", cron: str = NIGHTLY_CRON, name: str = "fitline-nightly",
                   retries: int = 2, pull: bool = False, push: bool = False,
                   announce: Callable[[str], object] = log.info) -> None:
    """Serve the flow from this process on a cron schedule (blocks; Ctrl-C stops it), through
    PREFECT_API_URL's server or else the local one."""
    with prefect_api(announce):
        training_pipeline.serve(name=name, cron=cron, tags=["fitline"],
                                parameters={"root": str(Path(root).resolve()), "retries": retries,
                                            "pull": pull, "push": push})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_pipeline(args.root, args.retries, args.retry_delay, args.lock_timeout, pull=args.pull, push=args.push,
                 announce=lambda line: print(line, file=sys.stderr))


if __name__ == "__main__":
    from stages.core.errors import run_main

    run_main(main, "run")
