"""The `fitline-tune` flow: an Optuna study (TPE, pruning) whose trials are Prefect tasks.

Ask/tell in batches of `workers` trials: the flow asks the study for a batch, runs it as trial
tasks on the sweep's task runner, waits, and tells the study each result. A trial task is the
sweep's trial (flows/sweep.execute_trial) with the sweep's cache key, so a configuration that
any sweep, comparison or study trained before is a cache hit; a trial reports each epoch's val
loss to a pruning trial held in memory (stages/tools/tune.pruning_trial) and stops when the
pruner says so. A pruned result depends on the other
trials of its study, so it is never cached (a full run of the same params may come later).

A trial is judged against the trials finished before its batch (never the batch's other
running trials), so a fresh study with the same seed samples and prunes the same way whatever
the thread timing.

The study is kept in the SQLite file `tune.storage` under a name derived from the data, the
code and the params (stages/tools/tune.study_name): a rerun continues it up to `trials`
finished trials (complete, pruned or failed), and a finished study trains nothing.
"""

from __future__ import annotations

# first: Prefect reads its settings when it is first imported
import flows.prefect_env  # noqa: F401  # isort: skip

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.sweep import (
    RunOptions,
    SweepResult,
    TrialData,
    apply_result,
    cache_storage,
    call_flow,
    execute_trial,
    load_trial_data,
    trial_cache_key,
)
from flows.workspace_lock import flock_waiting
from stages.core.contracts import PARAMS_PATH, TUNE_LEADERBOARD_PATH
from stages.core.errors import FitlineError, ParamsError
from stages.core.params import JUDGED_LOSS, EvaluateParams, TrainParams, TuneParams, load_params
from stages.tools.sweep import (
    check_validated,
    code_fingerprint,
    format_overrides,
    trial_params,
    write_leaderboard,
)
from stages.tools.tune import (
    PruningReport,
    check_space,
    make_pruner,
    make_sampler,
    pruning_trial,
    rank_study,
    storage_url,
    study_name,
    study_results,
    suggest,
    tune_rows,
)

log = logging.getLogger(__name__)

FLOW_NAME = "fitline-tune"
ARTIFACT_KEY = "fitline-tune"


@dataclass
class TuneResult(SweepResult):
    study: str = ""  # the study's name in the storage file
    storage: str = ""  # the SQLite URL
    new: int = 0  # trials this run added to the study
    trained: int = 0  # ... of which trained here (the others came from the cache)

    def columns(self) -> list[str]:
        loss = self.trials[0]["loss"]
        return ["rank", "trial", *self.keys, f"val_{loss}", f"test_{loss}", "verdict", "epochs", "seconds",
                "status", "cached"]


# ---------------------------------------------------------------------------------- a trial


@task(name="tune-trial", task_run_name="{label}", cache_key_fn=trial_cache_key, persist_result=True,
      result_serializer="json")
def tune_trial_task(label: str, train: TrainParams, evaluate: EvaluateParams, data: TrialData, code_key: str,
                    trial: Any, torch_threads: int | None = None) -> dict[str, Any]:
    """The sweep's trial, reporting each epoch's val loss to `trial` (stages/tools/tune.pruning_trial;
    None: no pruning)."""
    import optuna
    from prefect.transactions import get_transaction

    report = PruningReport(trial)
    try:
        return execute_trial(label, train, evaluate, data, torch_threads, on_epoch_end=report)
    except optuna.TrialPruned as exc:
        get_run_logger().info("%s: %s", label, exc)
        # not under the trial's cache key: the same params trained in full would be served this
        get_transaction().write_on_commit = False
        return report.pruned_result(data.meta.task, exc)


def tell(study: Any, trial: Any, result: dict[str, Any], cached: bool) -> None:
    """Record a trial's result in the study: the result (with its curve) as a user attribute,
    then its state and value."""
    from optuna.trial import TrialState

    trial.set_user_attr("result", {**result, "cached": cached})
    if result["status"] == "ok":
        study.tell(trial, result["val"][result["loss"]])
    else:
        study.tell(trial, state=TrialState.PRUNED if result["status"] == "pruned" else TrialState.FAIL)


# ------------------------------------------------------------------------------------ flow


def open_study(workspace: Path, train: TrainParams, evaluate: EvaluateParams, tune: TuneParams, data_key: str,
               code_key: str) -> Any:
    """The study of these params, data and code (created, or loaded to continue); trials an
    interrupted run left running are marked failed (the caller holds the study's lock)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the flow logs each trial itself
    study = optuna.create_study(storage=storage_url(workspace, tune), direction="minimize", load_if_exists=True,
                                study_name=study_name(train, evaluate, tune, data_key, code_key),
                                pruner=make_pruner(tune))
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        log.warning("tune: trial %d was left running by an interrupted run; marked failed", stale.number)
        study.tell(stale.number, state=TrialState.FAIL)
    study.sampler = make_sampler(tune, seed_offset=len(study.trials))
    return study


def finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


def run_batch(study: Any, size: int, workspace: Path, train: TrainParams, evaluate: EvaluateParams,
              tune: TuneParams, data: TrialData, code_key: str, torch_threads: int | None) -> int:
    """Ask the study for `size` trials, run them as tasks, tell it the results; how many trained here."""
    from optuna.trial import TrialState

    trial_task = tune_trial_task.with_options(result_storage=cache_storage(workspace))
    finished_before = study_results(study.get_trials(deepcopy=False), tune.space)
    runs = []
    for trial in [study.ask() for _ in range(size)]:
        overrides = suggest(trial, tune.space)
        label = f"trial {trial.number}: {format_overrides(overrides)}"
        try:
            params = trial_params(train, overrides)
        except ParamsError as exc:  # a combination TrainParams refuses (each value alone passed)
            get_run_logger().warning("%s: %s", label, exc)
            trial.set_user_attr("result", {"status": "failed", "error": str(exc), "task": data.meta.task,
                                           "loss": JUDGED_LOSS[data.meta.task]})
            study.tell(trial, state=TrialState.FAIL)
            continue
        runs.append((trial, trial_task.submit(label=label, train=params, evaluate=evaluate, data=data,
                                              code_key=code_key, trial=pruning_trial(tune, finished_before),
                                              torch_threads=torch_threads)))
    trained = 0
    for trial, future in runs:
        result = future.result()  # an unexpected error in a trial fails the flow here
        cached = future.state.name == "Cached"
        trained += not cached
        tell(study, trial, result, cached)
    return trained


@flow(name=FLOW_NAME)
def tune_flow(root: str = ".", trials: int | None = None, timeout: float | None = None,
              torch_threads: int | None = None, workers: int = 1) -> TuneResult:
    """Continue the study of params `tune` up to `trials` finished trials; write the leaderboard.
    The caller holds study_lock (run_tune does).

    Args:
        root: the project workspace (params.yaml, validated data/).
        trials: the study's budget (None = params tune.trials).
        timeout: seconds after which no new trial starts (None = params tune.timeout).
        torch_threads: torch threads per trial (None = torch's default).
        workers: trials asked and run at once.
    """
    logger = get_run_logger()
    workspace = Path(root).resolve()
    params = load_params(workspace / PARAMS_PATH)
    tune = params.tune
    budget, timeout = trials or tune.trials, timeout if timeout is not None else tune.timeout
    data, code_key = load_trial_data(workspace), code_fingerprint()
    study = open_study(workspace, params.train, params.evaluate, tune, data.key, code_key)
    before, trained, start = finished(study), 0, time.monotonic()
    logger.info("study %s: %d of %d trials finished", study.study_name, before, budget)
    while (done := finished(study)) < budget:
        if timeout is not None and time.monotonic() - start >= timeout:
            logger.info("timeout: %g s passed; no new trial starts (%d of %d finished)", timeout, done, budget)
            break
        trained += run_batch(study, min(workers, budget - done), workspace, params.train, params.evaluate,
                             tune, data, code_key, torch_threads)
    ranked = rank_study(study.get_trials(deepcopy=False), tune.space)
    result = TuneResult(ranked, tune_rows(ranked, list(tune.space)), list(tune.space), path=TUNE_LEADERBOARD_PATH,
                        study=study.study_name, storage=storage_url(workspace, tune),
                        new=finished(study) - before, trained=trained)
    write_leaderboard(result.rows, workspace, TUNE_LEADERBOARD_PATH)
    best = result.best
    summary = f"best: {format_overrides(best['params'])}" if best else "no trial completed"
    create_table_artifact(table=result.rows, key=ARTIFACT_KEY,
                          description=f"fitline tune, study {study.study_name}: {len(result.rows)} trials ranked by "
                                      f"val {ranked[0]['loss'] if ranked else '-'}; {summary}")
    logger.info("%s (%d new trials, %d trained, the rest from cache)", summary, result.new, trained)
    return result


class StudyBusy(FitlineError):
    """Another `fitline tune` holds the study's storage file."""


@contextlib.contextmanager
def study_lock(workspace: Path, tune: TuneParams) -> Iterator[None]:
    """One tune run per storage file at a time (so trials left running are an interrupted run's)."""
    path = Path(workspace) / (tune.storage + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flock_waiting(fd, 0.0, busy=lambda: StudyBusy(f"another fitline tune is using {tune.storage}; "
                                                       "wait for it to finish"))
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the command


def run_tune(root: str | Path = ".", *, trials: int | None = None, timeout: float | None = None,
             workers: int | None = None, runner: str | None = None, apply: bool = False,
             announce: Callable[[str], object] = log.info) -> TuneResult:
    """What `fitline tune` does. Params, the space and the data are checked before Prefect starts."""
    workspace = Path(root).resolve()
    params = load_params(workspace / PARAMS_PATH)
    if trials is not None and trials < 1:
        raise ParamsError(f"--trials: {trials}; must be 1 or more")
    if timeout is not None and timeout <= 0:
        raise ParamsError(f"--timeout: {timeout:g}; must be above 0 seconds")
    options = RunOptions.resolve(params, runner, workers)
    check_space(params.train, params.tune.space)
    check_validated(workspace)
    with study_lock(workspace, params.tune):
        result = call_flow(tune_flow, options, announce=announce, root=str(workspace), trials=trials,
                           timeout=timeout, workers=options.workers)
    return apply_result(result, workspace, apply, "no trial of the study completed")
