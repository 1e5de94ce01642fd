"""`fitline tune`: an Optuna study over params `tune.space`, its trials the sweep's trials.

Plain computation on top of stages/tools/sweep.py; flows/tune.py runs the trials as Prefect
tasks. Here: the study's name and its sampler and pruner, how a trial samples the space (and
how a stored trial's values map back to train keys), the epoch callback that reports each
epoch's val loss for the pruner and stops a pruned trial, and the leaderboard rows of a study.
A trial's curve is kept in the stored study as part of its result (user attribute `result`,
`history`), not as Optuna intermediate values (see pruning_trial).

A choice is stored in the study as its params.yaml spelling ("[64, 64]", "adam"): Optuna keeps
categorical values of a few plain types only, and the spelling maps back to the value exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.params import (
    JUDGED_LOSS,
    EvaluateParams,
    SpaceParam,
    TrainParams,
    TuneParams,
    train_key_type,
)
from stages.tools.sweep import (
    format_value,
    leaderboard_rows,
    rank_trials,
    rank_value,
    trial_history,
    trial_key,
    trial_params,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# the tune params a study's trials depend on; trials, timeout and storage only say how far to go
STUDY_KEYS = ("sampler_seed", "startup_trials", "pruner", "warmup_epochs", "space")
SUCCESSIVE_HALVING_FACTOR = 3  # keep the best third of the trials at each rung


# --------------------------------------------------------------------------------- the study


def study_name(train: TrainParams, evaluate: EvaluateParams, tune: TuneParams, data_key: str, code_key: str) -> str:
    """A name for the study of these params, data and code: changing any of them starts a new one."""
    head = {"base": trial_key(train, evaluate, data_key, code_key),
            "tune": tune.model_dump(mode="json", include=set(STUDY_KEYS))}
    return "fitline-tune-" + hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()[:16]


def storage_url(root: str | Path, tune: TuneParams) -> str:
    """The SQLite URL of `tune.storage` (relative to the workspace unless absolute); its folder is made."""
    path = Path(root) / tune.storage
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def make_sampler(tune: TuneParams, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """TPE, seeded: sampler_seed for a fresh study, shifted by the trials a continued one already
    holds (the same seed again would repeat the first random draws, trials the cache already has)."""
    import optuna

    return optuna.samplers.TPESampler(seed=tune.sampler_seed + seed_offset, n_startup_trials=tune.startup_trials,
                                      constant_liar=True)


def make_pruner(tune: TuneParams) -> optuna.pruners.BasePruner:
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, tune.warmup_epochs),
                                                      reduction_factor=SUCCESSIVE_HALVING_FACTOR)
    if tune.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune.pruner: unknown pruner {tune.pruner!r}")


# --------------------------------------------------------------------------------- the space


def _labels(spec: SpaceParam) -> list[str]:
    return [format_value(c) for c in spec.choices or ()]


def suggest(trial: optuna.Trial, space: Mapping[str, SpaceParam]) -> dict[str, Any]:
    """The trial's values for the space's keys, as train overrides ({key: value})."""
    sampled = {}
    for key, spec in space.items():
        if spec.choices is not None:
            sampled[key] = trial.suggest_categorical(key, _labels(spec))
        elif train_key_type(key) is int:
            sampled[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            sampled[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    return overrides_of(sampled, space)


def overrides_of(sampled: Mapping[str, Any], space: Mapping[str, SpaceParam]) -> dict[str, Any]:
    """A stored trial's values back as train overrides: a choice's label becomes its value."""
    out = {}
    for key, spec in space.items():
        value = sampled[key]
        out[key] = spec.choices[_labels(spec).index(value)] if spec.choices is not None else value
    return out


def check_space(base: TrainParams, space: Mapping[str, SpaceParam]) -> None:
    """Every choice and both ends of every range pass TrainParams' validation (a ParamsError names
    the first that does not) before any trial starts."""
    for key, spec in space.items():
        for value in spec.choices or (spec.low, spec.high):
            trial_params(base, {key: int(value) if spec.choices is None and train_key_type(key) is int else value})


# ---------------------------------------------------------------------------------- a trial


def pruning_trial(tune: TuneParams, finished: list[dict[str, Any]]) -> optuna.Trial | None:
    """The trial a running trial reports its epochs to: in a study in memory that holds the curves
    of the `finished` results (sweep results with their history), judged by the tune pruner.

    Not the stored study: a report and a pruning check there are SQLite transactions, about 45 ms
    an epoch, longer than an epoch of the default data; here they take a fraction of a
    millisecond. Each trial gets its own, so what it is judged against does not depend on the
    timing of the other trials of its batch. None when tune.pruner is none.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    if tune.pruner == "none":
        return None
    study = optuna.create_study(direction="minimize", pruner=make_pruner(tune))
    for result in finished:
        curve = {rec["epoch"]: rec["val_loss"] for rec in result.get("history") or []}
        if tune.pruner == "median":  # it reads the intermediate values of completed trials only
            if result["status"] == "ok":
                study.add_trial(create_trial(value=rank_value(result), intermediate_values=curve))
            continue
        # successive halving records a trial's rungs as it asks should_prune: replay the curve
        trial = study.ask()
        report_history(trial, result.get("history") or [])
        if result["status"] == "ok":
            study.tell(trial, rank_value(result))
        else:
            study.tell(trial, state=TrialState.PRUNED if result["status"] == "pruned" else TrialState.FAIL)
    return study.ask()


class PruningReport:
    """An epoch callback: each epoch's val loss goes to the pruning trial (pruning_trial); one the
    pruner stops raises optuna.TrialPruned, which ends its training there. The records seen are kept."""

    def __init__(self, trial: optuna.Trial | None) -> None:
        self.trial = trial  # None: no pruning, the records alone
        self.records: list[dict[str, Any]] = []

    def __call__(self, rec: dict[str, Any]) -> None:
        import optuna

        self.records.append(rec)
        if self.trial is None:
            return
        self.trial.report(rec["val_loss"], rec["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {rec['epoch']} (val loss {rec['val_loss']:.4g})")

    def pruned_result(self, task: str, reason: BaseException | str) -> dict[str, Any]:
        """A pruned trial's result: status "pruned", its epochs and history up to there (no
        metrics: it never finished)."""
        history = trial_history(self.records)
        return {"status": "pruned", "error": str(reason), "task": task, "loss": JUDGED_LOSS[task],
                "epochs": len(history), "seconds": history[-1]["seconds"] if history else 0.0, "history": history}


def report_history(trial: optuna.Trial, history: list[dict[str, Any]]) -> None:
    """Report a finished trial's epochs to `trial`, asking should_prune at each as a run does
    (successive halving records its rungs then)."""
    for rec in history:
        trial.report(rec["val_loss"], rec["epoch"])
        trial.should_prune()


# ------------------------------------------------------------------------------ leaderboard

# a finished study trial's state -> the status the leaderboard shows
STATE_STATUS = {"COMPLETE": "ok", "PRUNED": "pruned", "FAIL": "failed"}


def study_results(trials: list[optuna.trial.FrozenTrial], space: Mapping[str, SpaceParam]) -> list[dict[str, Any]]:
    """The finished trials of a study as sweep results (params, metrics, status, trial number)."""
    results = []
    for t in trials:
        status = STATE_STATUS.get(t.state.name)
        if status is None or set(t.params) != set(space):
            continue  # still running, or a trial that never sampled (failed before it started)
        result = dict(t.user_attrs.get("result") or {"error": "no result recorded", "task": "regression",
                                                     "loss": "mse"})
        results.append({**result, "status": status, "params": overrides_of(t.params, space), "trial": t.number})
    return results


def tune_rows(ranked: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """The sweep's leaderboard rows with the study's trial number after the rank."""
    return [{"rank": row["rank"], "trial": t["trial"], **{k: v for k, v in row.items() if k != "rank"}}
            for row, t in zip(leaderboard_rows(ranked, keys), ranked)]


def rank_study(trials: list[optuna.trial.FrozenTrial], space: Mapping[str, SpaceParam]) -> list[dict[str, Any]]:
    """Best first, as a sweep ranks: val loss, then pruned, then failed trials."""
    return rank_trials(study_results(trials, space))
