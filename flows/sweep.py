"""The `fitline-sweep` flow: a grid of train params, each trial a mapped Prefect task.

A trial calls the stages' own `train_model` and `evaluate_model` in-process on the validated
data (stages/tools/sweep.run_trial); there is no DVC run per trial. Its cache key is a hash of the
trial's full train params, the evaluate params, the data's content (md5 of the parquet files
and meta.json), the trial code and the device; results are persisted under
.dvc/tmp/fitline-sweep-cache, so rerunning a grid trains nothing (every trial is Cached) and
a grown grid trains only its new trials. `fitline compare` reuses the same task and cache.

Task runners: threads (default) or processes on this machine, or Dask through prefect-dask:
a temporary local cluster, or an existing scheduler (`--dask-address`). Parallel trials in one
machine share its cores, so each trial gets cores // workers torch threads.
"""

from __future__ import annotations

# first: Prefect reads its settings when it is first imported
import flows.prefect_env  # noqa: F401  # isort: skip

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_table_artifact
from prefect.context import TaskRunContext

from flows.interactive import command_line_run
from flows.local_server import prefect_api
from flows.prefect_env import set_defaults
from stages.core.contracts import (
    DATA_DIR,
    PARAMS_PATH,
    SWEEP_CACHE_DIR,
    SWEEP_LEADERBOARD_PATH,
    Meta,
    data_fingerprint,
    load_meta,
)
from stages.core.errors import FitlineError, ParamsError
from stages.core.params import EvaluateParams, TrainParams, load_params
from stages.data.splits import Split, load_splits
from stages.tools.sweep import (
    apply_best,
    check_validated,
    code_fingerprint,
    format_overrides,
    grid_trials,
    leaderboard_rows,
    markdown_table,
    rank_trials,
    run_trial,
    trial_key,
    trial_params,
    write_leaderboard,
)

# Idle OpenMP threads sleep instead of spinning: trials share the cores with each other (and
# the train stage sets the same in dvc.yaml). OpenMP reads it once, when torch first loads,
# which none of the imports above does (tests/flows/test_flow_env.py checks).
TRIAL_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
set_defaults(TRIAL_ENV_DEFAULTS)

log = logging.getLogger(__name__)

FLOW_NAME = "fitline-sweep"
ARTIFACT_KEY = "fitline-sweep"
# beside DVC's own temporary state, like the pipeline flow's cache: never committed
CACHE_DIR = SWEEP_CACHE_DIR
RUNNERS = ("threads", "processes", "dask")


@dataclass(frozen=True)
class TrialData:
    """What every trial reads: the validated splits, meta.json and their content hash."""

    splits: dict[str, Split]
    meta: Meta
    key: str


@dataclass
class SweepResult:
    trials: list[dict[str, Any]]  # ranked, best first (each with params, metrics, history, cached)
    rows: list[dict[str, Any]]  # the leaderboard as written to reports/sweep.csv
    keys: list[str]  # the grid's train keys
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # --apply: key -> (old, new)
    path: Path = SWEEP_LEADERBOARD_PATH  # where the leaderboard was written, relative to the workspace

    @property
    def best(self) -> dict[str, Any] | None:
        return self.trials[0] if self.trials and self.trials[0]["status"] == "ok" else None

    def columns(self) -> list[str]:
        """The leaderboard's columns shown on the terminal."""
        loss = self.trials[0]["loss"]
        return ["rank", *self.keys, f"val_{loss}", f"test_{loss}", "verdict", "epochs", "seconds", "cached"]


# ---------------------------------------------------------------------------------- trials


def cache_storage(root: str | os.PathLike[str]) -> Path:
    return Path(root).resolve() / CACHE_DIR


def load_trial_data(root: str | Path) -> TrialData:
    """The validated data of the workspace at `root` (a DataError says to run `dvc repro validate`)."""
    root = Path(root)
    check_validated(root)
    data_dir = root / DATA_DIR
    meta = load_meta(data_dir)
    return TrialData(load_splits(data_dir, meta), meta, data_fingerprint(data_dir))


def plan_trials(base: TrainParams, grid: dict[str, Any]) -> list[tuple[dict[str, Any], TrainParams]]:
    """Every trial of the grid with its validated train params; a bad value fails them all first."""
    if not grid:
        raise ParamsError("sweep.grid: empty; name train keys and the values to try, "
                          "e.g. sweep: {grid: {optimizer: [adam, sgd], lr: [0.001, 0.01]}}")
    return [(o, trial_params(base, o)) for o in grid_trials(grid)]


def trial_cache_key(ctx: TaskRunContext, inputs: dict[str, Any]) -> str:
    """The cache key of a trial task (sweep, compare and tune share it, and so their results)."""
    return trial_key(inputs["train"], inputs["evaluate"], inputs["data"].key, inputs["code_key"])


def execute_trial(label: str, train: TrainParams, evaluate: EvaluateParams, data: TrialData,
                  torch_threads: int | None = None, on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
                  ) -> dict[str, Any]:
    """A trial task's body: run_trial with the task's torch threads, and one log line of its result."""
    if torch_threads:
        import torch

        if torch.get_num_threads() != torch_threads:  # a worker process of its own
            torch.set_num_threads(torch_threads)
    result = run_trial(train, evaluate, data.splits, data.meta, on_epoch_end)
    logger = get_run_logger()
    if result["status"] == "ok":
        logger.info("%s: val %s %.4g, verdict %s, %d epochs in %.1f s", label, result["loss"],
                    result["val"][result["loss"]], result["verdict"], result["epochs"], result["seconds"])
    elif result["status"] == "failed":
        logger.warning("%s: failed: %s", label, result["error"])
    return result


@task(name="sweep-trial", task_run_name="{label}", cache_key_fn=trial_cache_key, persist_result=True,
      result_serializer="json")
def trial_task(label: str, train: TrainParams, evaluate: EvaluateParams, data: TrialData, code_key: str,
               torch_threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; a small dict (params, metrics, verdict, history)."""
    return execute_trial(label, train, evaluate, data, torch_threads)


def run_trials(root: str | Path, plan: list[tuple[dict[str, Any], TrainParams]], evaluate: EvaluateParams,
               torch_threads: int | None = None, labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Map the trial task over `plan` (inside a flow); results in plan order, each with `cached`.

    `labels` name the task runs (default: the overrides, `optimizer=adam,lr=0.001`)."""
    data = load_trial_data(root)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)  # trials in this process's threads share its pool
    trial = trial_task.with_options(result_storage=cache_storage(root))
    futures = trial.map(
        label=labels or [format_overrides(o) for o, _ in plan], train=[t for _, t in plan],
        evaluate=unmapped(evaluate), data=unmapped(data), code_key=unmapped(code_fingerprint()),
        torch_threads=unmapped(torch_threads),
    )
    futures.wait()
    results = []
    for (overrides, _), future in zip(plan, futures):
        result = future.result()  # an unexpected error in a trial fails the flow here
        # the overrides come from the plan, not the cache: another grid may have cached the
        # same train params under other keys (lr=0.003 there, optimizer=adam here)
        results.append({**result, "params": overrides, "cached": future.state.name == "Cached"})
    return results


# ------------------------------------------------------------------------------------ flow


@flow(name=FLOW_NAME)
def sweep_flow(root: str = ".", grid: dict[str, list[Any]] | None = None,
               torch_threads: int | None = None) -> list[dict[str, Any]]:
    """Run every trial of the grid (params `sweep.grid` unless given); write the leaderboard.

    Args:
        root: the project workspace (params.yaml, validated data/).
        grid: train key -> values to try; None = params.yaml's sweep.grid.
        torch_threads: torch threads per trial (None = torch's default).
    """
    logger = get_run_logger()
    workspace = Path(root).resolve()
    params = load_params(workspace / PARAMS_PATH)
    grid = dict(grid if grid is not None else params.sweep.grid)
    plan = plan_trials(params.train, grid)
    logger.info("%d trials over %s", len(plan), ", ".join(grid))
    ranked = rank_trials(run_trials(workspace, plan, params.evaluate, torch_threads))
    rows = leaderboard_rows(ranked, list(grid))
    write_leaderboard(rows, workspace)
    best = ranked[0] if ranked[0]["status"] == "ok" else None
    summary = f"best: {format_overrides(best['params'])}" if best else "every trial failed"
    create_table_artifact(table=rows, key=ARTIFACT_KEY,
                          description=f"fitline sweep, {len(rows)} trials ranked by val {ranked[0]['loss']}; {summary}")
    logger.info("%s (%d of %d trials from cache)", summary, sum(t["cached"] for t in ranked), len(ranked))
    return ranked


# ------------------------------------------------------------------------------- runners


def make_task_runner(runner: str, workers: int, dask_address: str | None = None, dask_processes: bool = True):
    """threads | processes on this machine, or dask (a local cluster, or the scheduler at an address)."""
    if dask_address:
        runner = "dask"
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                              "processes": dask_processes, "dashboard_address": None})
    raise ParamsError(f"sweep.runner: unknown runner {runner!r} (allowed: {', '.join(RUNNERS)})")


def threads_per_trial(workers: int, dask_address: str | None) -> int | None:
    """Trials on this machine share its cores; a remote cluster's workers keep their own setting."""
    return None if dask_address else max(1, (os.cpu_count() or 1) // workers)


@dataclass(frozen=True)
class RunOptions:
    """How trials run: the task runner, from params `sweep` unless overridden on the command line."""

    runner: str
    workers: int
    dask_address: str | None = None
    dask_processes: bool = True

    @classmethod
    def resolve(cls, params: Any, runner: str | None = None, workers: int | None = None,
                dask_address: str | None = None, dask_processes: bool = True) -> RunOptions:
        address = dask_address or params.sweep.dask_address
        chosen = "dask" if dask_address else (runner or params.sweep.runner)
        if chosen not in RUNNERS:
            raise ParamsError(f"--runner: unknown runner {chosen!r} (allowed: {', '.join(RUNNERS)})")
        count = workers if workers is not None else params.sweep.workers
        if count < 1:
            raise ParamsError(f"--workers: {count}; must be 1 or more")
        return cls(chosen, count, address if chosen == "dask" else None, dask_processes)

    def task_runner(self):
        return make_task_runner(self.runner, self.workers, self.dask_address, self.dask_processes)

    def torch_threads(self) -> int | None:
        return threads_per_trial(self.workers, self.dask_address)


def call_flow(flow_fn, options: RunOptions, *, announce: Callable[[str], object] = log.info, **kwargs: Any) -> Any:
    """Run a flow with the options' task runner; torch's thread count is restored afterwards.

    Without PREFECT_API_URL, on the local Prefect server (started if needed; `announce` gets
    the line that says so), whose URL worker processes of a process pool or a local Dask
    cluster inherit: each would otherwise start a temporary server of its own.
    """
    import torch

    before = torch.get_num_threads()
    try:
        with prefect_api(announce), command_line_run():
            return flow_fn.with_options(task_runner=options.task_runner())(
                torch_threads=options.torch_threads(), **kwargs)
    finally:
        torch.set_num_threads(before)


def run_sweep(root: str | Path = ".", *, grid: dict[str, list[Any]] | None = None, runner: str | None = None,
              workers: int | None = None, dask_address: str | None = None, dask_processes: bool = True,
              apply: bool = False, announce: Callable[[str], object] = log.info) -> SweepResult:
    """What `fitline sweep` does. Params and data are checked before Prefect starts (fast failure)."""
    workspace = Path(root).resolve()
    params = load_params(workspace / PARAMS_PATH)
    options = RunOptions.resolve(params, runner, workers, dask_address, dask_processes)
    keys = list(grid if grid is not None else params.sweep.grid)
    plan_trials(params.train, dict(grid if grid is not None else params.sweep.grid))
    check_validated(workspace)
    log.info("sweep: %s runner, %d workers", options.runner, options.workers)
    ranked = call_flow(sweep_flow, options, announce=announce, root=str(workspace), grid=grid)
    result = SweepResult(ranked, leaderboard_rows(ranked, keys), keys)
    return apply_result(result, workspace, apply, f"every trial failed (the first: {ranked[0]['error']})")


def apply_result(result: SweepResult, workspace: Path, apply: bool, none_ok: str) -> SweepResult:
    """A sweep's or a study's result, its best trial written into params.yaml with `apply`;
    a FitlineError (`none_ok`, and where the leaderboard is) when no trial finished ok."""
    if result.best is None:
        raise FitlineError(f"{none_ok}; see {result.path}" + ("; params.yaml is left as it is" if apply else ""))
    if apply:
        result.changed = apply_best(workspace / PARAMS_PATH, result.best["params"])
    return result


def leaderboard_text(result: SweepResult, top: int = 10) -> str:
    """The leaderboard's first rows and the best config, for the terminal."""
    if not result.rows:
        return "no trials\n"
    text = markdown_table(result.rows[:top], result.columns())
    if len(result.rows) > top:
        text += f"... {len(result.rows) - top} more in {result.path}\n"
    best = result.best
    text += f"\nbest: {format_overrides(best['params'])}\n" if best else "\nevery trial failed\n"
    return text
