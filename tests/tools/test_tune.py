"""The tune space, sampling, pruning decisions, study names and ranking, on real Optuna studies
held in memory (no Prefect, no training)."""

from __future__ import annotations

import optuna
import pytest

from stages.core.errors import ParamsError
from stages.core.params import EvaluateParams, SpaceParam, TrainParams, TuneParams, parse_params
from stages.tools.sweep import rank_trials, trial_params
from stages.tools.tune import (
    PruningReport,
    check_space,
    make_sampler,
    overrides_of,
    pruning_trial,
    rank_study,
    study_name,
    suggest,
    tune_rows,
)

SPACE = {
    "lr": SpaceParam(low=1e-4, high=3e-2, log=True),
    "reg_strength": SpaceParam(low=0.0, high=0.01),
    "hidden": SpaceParam(choices=([32], [64, 64], [128, 128])),
    "optimizer": SpaceParam(choices=("adam", "sgd")),
    "epochs": SpaceParam(low=5, high=50),
    "early_stopping.patience": SpaceParam(choices=(None, 5)),
}


def _tune(**kw) -> TuneParams:
    return parse_params({"tune": kw}).tune


# ------------------------------------------------------------------------------- the space


@pytest.mark.parametrize(("space", "fragment"), [
    ({"learning_rate": {"low": 0.1, "high": 1}}, r"tune\.space: unknown train key 'learning_rate' \(allowed: .*lr"),
    ({"lr": {"low": 0.1, "high": 0.1}}, r"tune\.space\.lr: low 0\.1 must be below high 0\.1"),
    ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, r"tune\.space\.lr: log scale needs low > 0 \(got 0\)"),
    ({"hidden": {"choices": []}}, r"tune\.space\.hidden\.choices: empty"),
    ({"lr": {"low": 0.1}}, r"tune\.space\.lr: give low and high"),
    ({"lr": {"low": 0.1, "high": 1, "choices": [0.5]}}, r"tune\.space\.lr: give either choices or low/high"),
    ({"optimizer": {"low": 0, "high": 1}}, r"tune\.space\.optimizer: a range needs a numeric train key"),
    ({"epochs": {"low": 1.5, "high": 9}}, r"tune\.space\.epochs: an integer key needs whole-number"),
    ({"lr": {"low": 0.1, "high": 1, "step": 2}}, r"unknown key 'tune\.space\.lr\.step'"),
    ({}, r"tune\.space: empty"),
])
def test_space_errors_name_the_key(space, fragment):
    with pytest.raises(ParamsError, match=fragment):
        parse_params({"tune": {"space": space}})


def test_tune_budget_and_pruner_are_checked():
    with pytest.raises(ParamsError, match=r"tune\.trials: 0 is not allowed"):
        parse_params({"tune": {"trials": 0}})
    with pytest.raises(ParamsError, match=r"tune\.pruner: 'hyperband' is not allowed.*'median', 'successive_halving'"):
        parse_params({"tune": {"pruner": "hyperband"}})


def test_choices_and_range_ends_pass_train_validation_before_any_trial():
    check_space(TrainParams(), SPACE)
    with pytest.raises(ParamsError, match=r"train\.optimizer: 'adm' is not allowed"):
        check_space(TrainParams(), {"optimizer": SpaceParam(choices=("adam", "adm"))})
    with pytest.raises(ParamsError, match=r"lr=200\.0: train\.lr.*200\.0 is not allowed"):
        check_space(TrainParams(), {"lr": SpaceParam(low=0.1, high=200)})


def test_sampling_gives_valid_train_params_within_the_space():
    study = optuna.create_study(sampler=make_sampler(_tune(sampler_seed=1, startup_trials=3)))
    seen_hidden = set()
    for _ in range(12):
        trial = study.ask()
        overrides = suggest(trial, SPACE)
        p = trial_params(TrainParams(), overrides)
        assert 1e-4 <= p.lr <= 3e-2 and 0.0 <= p.reg_strength <= 0.01 and 5 <= p.epochs <= 50
        assert isinstance(overrides["epochs"], int) and p.early_stopping.patience in (None, 5)
        assert overrides["hidden"] in ([32], [64, 64], [128, 128]) and p.optimizer in ("adam", "sgd")
        assert overrides_of(trial.params, SPACE) == overrides  # the stored labels map back exactly
        seen_hidden.add(tuple(p.hidden))
        study.tell(trial, p.lr)
    assert len(seen_hidden) > 1
    assert study.trials[0].params["hidden"] in ("[32]", "[64, 64]", "[128, 128]")  # stored as params.yaml spells it


def test_a_fresh_study_is_reproducible_and_a_continued_one_draws_anew():
    def draws(offset: int) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler(_tune(), seed_offset=offset))
        out = []
        for _ in range(3):
            trial = study.ask()
            out.append(suggest(trial, SPACE))
            study.tell(trial, 1.0)
        return out

    assert draws(0) == draws(0)
    assert draws(0)[0] != draws(3)[0]


# --------------------------------------------------------------------------------- pruning


def _finished(curve: list[float], status: str = "ok") -> dict:
    """A finished trial's result as the study keeps it (its curve in `history`)."""
    history = [{"epoch": e, "train_loss": v, "val_loss": v, "seconds": 0.1 * e} for e, v in enumerate(curve, start=1)]
    return {**_result(min(curve) if status == "ok" else None, status), "history": history}


def _rec(epoch: int, val: float) -> dict:
    return {"epoch": epoch, "train_loss": val, "val_loss": val, "lr": 0.01, "epoch_seconds": 0.5}


def test_median_pruner_stops_a_trial_worse_than_the_median_after_warmup():
    tune = _tune(pruner="median", startup_trials=2, warmup_epochs=3)
    finished = [_finished([2.0, 1.5, 1.2, 1.1, 1.0]), _finished([2.2, 1.6, 1.3, 1.2, 1.1]),
                _finished([0.1, 0.1, 0.1], "pruned")]  # a pruned curve is no part of the median
    worse = PruningReport(pruning_trial(tune, finished))
    worse(_rec(1, 9.0))
    worse(_rec(2, 9.0))  # worse than the median, but within the warmup epochs
    with pytest.raises(optuna.TrialPruned, match=r"pruned at epoch 3 \(val loss 9\)"):
        worse(_rec(3, 9.0))
    result = worse.pruned_result("regression", "pruned at epoch 3")
    assert (result["status"], result["epochs"], result["loss"]) == ("pruned", 3, "mse")
    assert result["seconds"] == 1.5 and [h["epoch"] for h in result["history"]] == [1, 2, 3]

    better = PruningReport(pruning_trial(tune, finished))
    for epoch in range(1, 6):
        better(_rec(epoch, 0.9))  # below the median at every epoch: trains on


def test_no_pruning_before_startup_trials_or_with_pruner_none():
    finished = [_finished([1.0, 1.0, 1.0, 1.0])]
    assert pruning_trial(_tune(pruner="none"), finished) is None
    for trial in (pruning_trial(_tune(pruner="median", startup_trials=2, warmup_epochs=0), finished), None):
        report = PruningReport(trial)
        for epoch in range(1, 5):
            report(_rec(epoch, 50.0))
        assert len(report.records) == 4


def test_successive_halving_prunes_at_its_rungs():
    tune = _tune(pruner="successive_halving", warmup_epochs=2)
    report = PruningReport(pruning_trial(tune, [_finished([1.0, 0.9, 0.8, 0.7])] * 3))
    report(_rec(1, 9.0))
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        report(_rec(2, 9.0))
    good = PruningReport(pruning_trial(tune, [_finished([1.0, 0.9, 0.8, 0.7])] * 3))
    for epoch in range(1, 5):
        good(_rec(epoch, 0.5))


# --------------------------------------------------------------------------- study, ranking


def test_study_name_follows_data_code_and_space_not_the_budget():
    train, ev = TrainParams(device="cpu"), EvaluateParams()
    base = study_name(train, ev, _tune(), "data", "code")
    assert base == study_name(train, ev, _tune(trials=50, timeout=60, storage="x.db"), "data", "code")
    assert base != study_name(train, ev, _tune(space={"lr": {"low": 0.001, "high": 0.1}}), "data", "code")
    assert base != study_name(train, ev, _tune(sampler_seed=7), "data", "code")
    assert base != study_name(train, ev, _tune(), "other data", "code")
    assert base != study_name(train, ev, _tune(), "data", "other code")
    assert base != study_name(train.model_copy(update={"epochs": 9}), ev, _tune(), "data", "code")


def _result(val: float | None, status: str = "ok") -> dict:
    out = {"status": status, "error": None if status == "ok" else status, "task": "regression", "loss": "mse",
           "epochs": 3, "seconds": 1.0}
    if val is not None:
        out.update(val={"mse": val, "rmse": 0.0, "mae": 0.0, "r2": 0.0}, test={"mse": val, "rmse": 0.0, "mae": 0.0,
                                                                               "r2": 0.0}, verdict="good")
    return out


def test_rank_study_orders_complete_then_pruned_then_failed():
    space = {"lr": SpaceParam(low=0.001, high=0.1, log=True), "hidden": SpaceParam(choices=([4], [8, 8]))}
    study = optuna.create_study()
    outcomes = [("fail", None), ("ok", 2.0), ("pruned", None), ("ok", 1.0)]
    for i, (kind, val) in enumerate(outcomes):
        trial = study.ask()
        suggest(trial, space)
        status = {"fail": "failed", "ok": "ok", "pruned": "pruned"}[kind]
        trial.set_user_attr("result", _result(val, status))
        state = {"fail": optuna.trial.TrialState.FAIL, "pruned": optuna.trial.TrialState.PRUNED}.get(kind)
        study.tell(trial, val if state is None else None, state=state)
    study.ask()  # still running: not on the leaderboard
    ranked = rank_study(study.get_trials(), space)
    assert [(t["trial"], t["status"]) for t in ranked] == [(3, "ok"), (1, "ok"), (2, "pruned"), (0, "failed")]
    rows = tune_rows(ranked, list(space))
    assert [(r["rank"], r["trial"]) for r in rows] == [(1, 3), (2, 1), (3, 2), (4, 0)]
    assert list(rows[0])[:4] == ["rank", "trial", "lr", "hidden"] and rows[0]["val_mse"] == 1.0
    assert rows[2]["val_mse"] is None and rows[2]["status"] == "pruned"


def test_sweep_ranking_puts_pruned_before_failed_whatever_the_seconds():
    slow_pruned = {**_result(None, "pruned"), "seconds": 9.0, "params": {"lr": 1}}
    fast_failed = {**_result(None, "failed"), "seconds": 0.1, "params": {"lr": 2}}
    ranked = rank_trials([fast_failed, slow_pruned, {**_result(3.0), "params": {"lr": 3}}])
    assert [t["params"]["lr"] for t in ranked] == [3, 1, 2]
