"""The `fitline-compare` flow: every optimizer on the same data and model, each at its best
learning rate; the table, chart and curves are computed by stages/tools/compare.py.

The runs are the sweep's own cached trial task (flows/sweep.run_trials): a comparison that
was run before trains nothing, and a sweep trial with the same params is reused.
"""

from __future__ import annotations

# first: Prefect reads its settings when it is first imported
import flows.prefect_env  # noqa: F401  # isort: skip

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.sweep import RunOptions, call_flow, run_trials
from stages.core.contracts import COMPARE_REPORT_PATH, DATA_DIR, PARAMS_PATH, load_meta
from stages.core.errors import FitlineError
from stages.core.params import load_params
from stages.tools.compare import Comparison, compare, compare_plan, report_markdown, write_comparison
from stages.tools.sweep import check_validated, trial_params

log = logging.getLogger(__name__)

FLOW_NAME = "fitline-compare"
ARTIFACT_KEY = "fitline-compare"


@dataclass
class CompareResult:
    comparison: Comparison
    markdown: str
    files: list[Path]
    cached: int  # trials taken from the cache
    trials: int


@flow(name=FLOW_NAME)
def compare_flow(root: str = ".", torch_threads: int | None = None, workers: int | None = None) -> CompareResult:
    """Train every optimizer of params `sweep.compare` at each of its learning rates; write
    reports/compare.{md,csv,png} and the table artifact `fitline-compare`."""
    logger = get_run_logger()
    workspace = Path(root).resolve()
    params = load_params(workspace / PARAMS_PATH)
    cp = params.sweep.compare
    plan = [(o, trial_params(params.train, o)) for o in compare_plan(params.train, cp)]
    logger.info("%d trials: %s", len(plan), ", ".join(f"{o} x {len(cp.lrs_for(o))}" for o in cp.optimizers))
    labels = [f"{o['optimizer']} lr={o['lr']:g}" for o, _ in plan]
    trials = run_trials(workspace, plan, params.evaluate, torch_threads, labels)
    result = compare(trials, cp)
    meta = load_meta(workspace / DATA_DIR)
    floor = (meta.irreducible or {}).get(result.loss)
    markdown = report_markdown(result, task=meta.task, n_train=meta.rows.get("train"),
                               noise_floor=floor, workers=workers)
    files = write_comparison(result, markdown, workspace)
    create_table_artifact(table=result.rows, key=ARTIFACT_KEY,
                          description=f"fitline compare: target val {result.loss} "
                                      f"{result.target if result.target is not None else '-'} ({result.target_how})")
    cached = sum(t["cached"] for t in trials)
    logger.info("best: %s (%d of %d trials from cache)", result.rows[0]["optimizer"], cached, len(trials))
    return CompareResult(result, markdown, files, cached, len(trials))


def run_compare(root: str | Path = ".", *, runner: str | None = None, workers: int | None = None,
                dask_address: str | None = None, dask_processes: bool = True,
                announce: Callable[[str], object] = log.info) -> CompareResult:
    """What `fitline compare` does. Params and data are checked before Prefect starts."""
    workspace = Path(root).resolve()
    params = load_params(workspace / PARAMS_PATH)
    options = RunOptions.resolve(params, runner, workers, dask_address, dask_processes)
    for overrides in compare_plan(params.train, params.sweep.compare):
        trial_params(params.train, overrides)
    check_validated(workspace)
    result = call_flow(compare_flow, options, announce=announce, root=str(workspace), workers=options.workers)
    if not any(t["status"] == "ok" for t in result.comparison.kept.values()):
        raise FitlineError(f"every optimizer failed at every learning rate; see {COMPARE_REPORT_PATH}")
    return result
