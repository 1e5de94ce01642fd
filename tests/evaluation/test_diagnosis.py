"""fit_diagnosis branch by branch, on crafted numbers (no model, no data files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.core.contracts import Meta
from stages.core.params import EvaluateParams
from stages.evaluation.diagnosis import OVERFIT_REMEDIES, UNDERFIT_REMEDIES, fit_diagnosis, read_curve

P = EvaluateParams()
BASE = 25.0  # the constant baseline's MSE (friedman's target variance is about 24 + noise²)


def reg_metrics(train: float, val: float, base: float = BASE) -> dict:
    """Regression metrics as the evaluation computes them (only what the diagnosis reads)."""
    return {
        "train": {"mse": train, "r2": 1 - train / base},
        "val": {"mse": val, "r2": 1 - val / base},
        "baseline": {"train": {"mse": base, "r2": 0.0}, "val": {"mse": base, "r2": 0.0}},
    }


def reg_meta(floor: float | None = 1.0) -> Meta:
    truth = None if floor is None else {"irreducible": {"mse": floor}}
    return Meta(task="regression", feature_names=["x0"], target="y", ground_truth=truth)


def curve(vals: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "train_loss": v * 0.9, "val_loss": v} for i, v in enumerate(vals)]


FLAT = curve([5.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.05, 1.03, 1.02, 1.025])  # converged: best at epoch 9 of 10
# best at epoch 3 of 20, then the val loss climbs 50%
U_SHAPED = curve([3.0, 1.5, 1.0] + [1.0 + 0.03 * i for i in range(1, 18)])


def test_good_model_near_the_noise_floor():
    fit = fit_diagnosis(P, reg_metrics(0.95, 1.08), FLAT, reg_meta())
    assert fit["verdict"] == "good"
    assert fit["remedies"] == []
    assert fit["noise_ratio"] == pytest.approx(0.95)
    assert fit["gap"] == pytest.approx((1.08 - 0.95) / 0.95)
    # the reasons say why it is good, with the numbers
    text = " ".join(fit["reasons"])
    assert "0.95x the noise floor 1" in text and "13.7%" in text
    json.dumps(fit, allow_nan=False)


def test_underfit_when_train_loss_stays_well_above_the_noise_floor():
    fit = fit_diagnosis(P, reg_metrics(7.0, 7.3), FLAT, reg_meta())
    assert fit["verdict"] == "underfit"
    assert fit["noise_ratio"] == pytest.approx(7.0)
    assert any("7.00x the noise floor 1" in r for r in fit["reasons"])
    assert fit["remedies"][0] == UNDERFIT_REMEDIES["capacity"]
    assert set(fit["remedies"]) == set(UNDERFIT_REMEDIES.values())
    # what passed is kept as notes
    assert any(n.startswith("passed: generalisation gap") for n in fit["notes"])


def test_noise_ratio_threshold_is_strict_and_from_params():
    assert fit_diagnosis(P, reg_metrics(1.5, 1.6), FLAT, reg_meta())["verdict"] == "good"
    assert fit_diagnosis(P, reg_metrics(1.51, 1.6), FLAT, reg_meta())["verdict"] == "underfit"
    loose = EvaluateParams(underfit_noise_ratio=8)
    assert fit_diagnosis(loose, reg_metrics(7.0, 7.3), FLAT, reg_meta())["verdict"] == "good"


def test_underfit_without_ground_truth_uses_skill_over_the_baseline():
    fit = fit_diagnosis(P, reg_metrics(24.0, 24.5), FLAT, reg_meta(None))
    assert fit["verdict"] == "underfit"
    assert fit["noise_floor"] is None and fit["noise_ratio"] is None
    assert fit["skill"] == pytest.approx(0.04)
    assert "no ground truth" in fit["reasons"][0]
    # the same linear-model numbers that the noise floor calls underfit pass the weaker skill test
    assert fit_diagnosis(P, reg_metrics(7.0, 7.3), FLAT, reg_meta(None))["verdict"] == "good"


def test_overfit_on_a_large_generalisation_gap():
    fit = fit_diagnosis(P, reg_metrics(0.05, 4.4), FLAT, reg_meta())
    assert fit["verdict"] == "overfit"
    assert fit["gap"] == pytest.approx((4.4 - 0.05) / 0.25)  # denominator floored at 1% of the baseline
    assert "generalisation gap" in fit["reasons"][0]
    assert fit["remedies"][0] == OVERFIT_REMEDIES["data"]
    assert OVERFIT_REMEDIES["early_stopping"] in fit["remedies"]


def test_gap_threshold_comes_from_params():
    m = reg_metrics(1.0, 1.4)
    assert fit_diagnosis(P, m, FLAT, reg_meta())["verdict"] == "overfit"
    assert fit_diagnosis(EvaluateParams(overfit_gap=0.5), m, FLAT, reg_meta())["verdict"] == "good"


def test_a_gap_within_sampling_noise_is_not_overfit():
    # 45 val rows: the val MSE's standard error is about 0.2, so 1.0 -> 1.4 is two standard errors
    m = reg_metrics(1.0, 1.4)
    m["train"]["mse_se"], m["val"]["mse_se"], m["val"]["n"] = 0.07, 0.2, 45
    fit = fit_diagnosis(P, m, FLAT, reg_meta())
    assert fit["verdict"] == "good"
    assert fit["gap_z"] == pytest.approx(0.4 / np.hypot(0.07, 0.2))
    assert "within the sampling noise of 45 val rows" in " ".join(fit["reasons"])
    # the same numbers on big splits (small standard errors) are overfit; gap_z 0 turns the test off
    m["train"]["mse_se"], m["val"]["mse_se"] = 0.01, 0.02
    assert fit_diagnosis(P, m, FLAT, reg_meta())["verdict"] == "overfit"
    m["train"]["mse_se"], m["val"]["mse_se"] = 0.07, 0.2
    assert fit_diagnosis(EvaluateParams(gap_z=0), m, FLAT, reg_meta())["verdict"] == "overfit"


def test_noise_free_data_tiny_losses_are_negligible():
    # noise 0: floor 0, train loss near 0; val twice train, but both explain > 99% of the variance
    fit = fit_diagnosis(P, reg_metrics(0.1, 0.2), FLAT, reg_meta(0.0))
    assert fit["verdict"] == "good"
    assert fit["gap"] == pytest.approx(0.1 / 0.25)  # train loss floored at 1% of the baseline's
    assert "negligible" in " ".join(fit["reasons"])
    # ... and the noise ratio is taken against 1% of the baseline, not against 0
    assert fit["noise_ratio"] == pytest.approx(0.1 / 0.25)
    assert fit_diagnosis(P, reg_metrics(6.0, 6.2), FLAT, reg_meta(0.0))["verdict"] == "underfit"


def test_learning_curve_overfit_when_the_last_epoch_is_evaluated():
    # the model in hand is the last epoch's (no early stopping): its gap is small, the curve is not
    fit = fit_diagnosis(P, reg_metrics(1.2, 1.5), U_SHAPED, reg_meta(), restored_best=False)
    assert fit["verdict"] == "overfit"
    assert fit["best_epoch"] == 3 and fit["epochs_run"] == 20
    assert fit["best_epoch_fraction"] == pytest.approx(0.15)
    assert fit["val_rise"] == pytest.approx((1.0 + 0.03 * 16.5) / 1.0 - 1)  # mean of the last 2 epochs
    assert "bottomed out at epoch 3 of 20" in fit["reasons"][0]


def test_learning_curve_with_restored_best_weights_is_a_note_not_a_verdict():
    fit = fit_diagnosis(P, reg_metrics(0.95, 1.05), U_SHAPED, reg_meta(), restored_best=True)
    assert fit["verdict"] == "good"
    assert any("early stopping restored the epoch-3 weights" in n for n in fit["notes"])


def test_restored_best_is_inferred_from_the_models_val_loss_when_not_given():
    # the model's val loss is the curve's minimum -> restored -> note only
    assert fit_diagnosis(P, reg_metrics(0.95, 1.0), U_SHAPED, reg_meta())["verdict"] == "good"
    # the model's val loss is the curve's last point -> last epoch -> overfit
    fit = fit_diagnosis(P, reg_metrics(1.2, 1.51), U_SHAPED, reg_meta())
    assert fit["verdict"] == "overfit" and fit["restored_best"] is False


def test_curve_rise_late_in_the_run_is_not_overfit():
    late = curve([3.0 - 0.1 * i for i in range(15)] + [1.7] * 5)  # best at 15 of 20
    fit = fit_diagnosis(P, reg_metrics(1.0, 1.1), late, reg_meta(), restored_best=False)
    assert fit["best_epoch"] == 15
    assert fit["verdict"] == "good"


EARLY_FLAT = curve([3.0, 1.5, 1.0] + [1.05] * 17)  # best at 3 of 20, ends only 5% above it
LATE_RISE = curve([3.0 - 0.1 * i for i in range(15)] + [2.0] * 5)  # best at 15 of 20, ends 25% above it


@pytest.mark.parametrize(("history", "early", "rose", "verdict"), [
    (EARLY_FLAT, True, False, "good"),  # bottomed out early, but no rise
    (LATE_RISE, False, True, "good"),  # rose, but the minimum came late
    (U_SHAPED, True, True, "overfit"),  # both: the curve rule fires
], ids=["early-minimum-no-rise", "late-minimum-with-rise", "both"])
def test_curve_rule_needs_an_early_minimum_and_a_rise(history, early, rose, verdict):
    # the evaluated model is the last epoch's, and its gap is small: only the curve can flag overfit
    fit = fit_diagnosis(P, reg_metrics(1.0, 1.05), history, reg_meta(), restored_best=False)
    assert (fit["best_epoch_fraction"] < P.early_best_fraction) is early
    assert (fit["val_rise"] > P.val_rise) is rose
    assert fit["verdict"] == verdict, fit["reasons"]
    shape = [r for r in fit["reasons"] if "bottomed out" in r]
    assert len(shape) == 1  # the curve's line: a reason for the verdict either way


def test_overfit_and_underfit_at_once():
    fit = fit_diagnosis(P, reg_metrics(7.0, 12.0), FLAT, reg_meta())
    assert fit["verdict"] == "overfit+underfit"
    assert len(fit["reasons"]) == 2
    assert "check the data first" in fit["remedies"][0]
    assert UNDERFIT_REMEDIES["capacity"] not in fit["remedies"]  # contradicts "a smaller model"


def test_still_improving_at_the_end_puts_more_epochs_first():
    rising_skill = curve([10.0 - 0.4 * i for i in range(10)])  # best = last epoch
    fit = fit_diagnosis(P, reg_metrics(6.0, 6.4), rising_skill, reg_meta())
    assert fit["verdict"] == "underfit"
    assert fit["remedies"][0] == UNDERFIT_REMEDIES["epochs"]
    assert any("still falling at the last epoch" in n for n in fit["notes"])
    assert "passed: val loss was lowest at the last epoch (10)" in " ".join(fit["notes"])


def test_restored_model_overfit_drops_the_early_stopping_remedy():
    fit = fit_diagnosis(P, reg_metrics(0.05, 4.4), U_SHAPED, reg_meta(), restored_best=True)
    assert fit["verdict"] == "overfit"
    assert OVERFIT_REMEDIES["early_stopping"] not in fit["remedies"]


def test_no_history_is_judged_on_the_gap_alone():
    fit = fit_diagnosis(P, reg_metrics(0.95, 1.05), [], reg_meta())
    assert fit["verdict"] == "good"
    assert fit["best_epoch"] is None
    assert any("no learning curve" in n for n in fit["notes"])


# ------------------------------------------------------------------------- classification


def cls_metrics(train_ll: float, val_ll: float, train_err: float, val_err: float, base_err: float = 0.5) -> dict:
    base = {"log_loss": 0.693, "error_rate": base_err}
    return {
        "train": {"log_loss": train_ll, "error_rate": train_err},
        "val": {"log_loss": val_ll, "error_rate": val_err},
        "baseline": {"train": base, "val": base},
    }


def cls_meta(floor_ll: float | None) -> Meta:
    truth = None if floor_ll is None else {"irreducible": {"log_loss": floor_ll, "error_rate": 0.1, "accuracy": 0.9}}
    return Meta(task="classification", feature_names=["x0"], target="y", classes=[0, 1], ground_truth=truth)


def test_classification_judges_log_loss_against_its_floor():
    good = fit_diagnosis(P, cls_metrics(0.33, 0.35, 0.1, 0.11), FLAT, cls_meta(0.3))
    assert good["verdict"] == "good" and good["loss"] == "log_loss"
    assert good["noise_ratio"] == pytest.approx(1.1)
    under = fit_diagnosis(P, cls_metrics(0.6, 0.62, 0.3, 0.31), FLAT, cls_meta(0.3))
    assert under["verdict"] == "underfit"
    assert "train log loss 0.6 is 2.00x the noise floor 0.3" in under["reasons"][0]
    over = fit_diagnosis(P, cls_metrics(0.02, 0.9, 0.0, 0.2), FLAT, cls_meta(0.3))
    assert over["verdict"] == "overfit"


def test_classification_without_ground_truth_uses_error_rate_skill():
    # 44% errors against the majority class's 50%: skill 0.12 -> not below min_skill 0.1
    assert fit_diagnosis(P, cls_metrics(0.68, 0.69, 0.44, 0.46), FLAT, cls_meta(None))["verdict"] == "good"
    fit = fit_diagnosis(P, cls_metrics(0.69, 0.69, 0.48, 0.49), FLAT, cls_meta(None))
    assert fit["verdict"] == "underfit"
    assert fit["skill"] == pytest.approx(0.04)


def test_read_curve_numbers():
    c = read_curve(curve([4.0, 2.0, 1.0, 2.0]))
    assert c["best_epoch"] == 3 and c["epochs_run"] == 4
    assert c["best_epoch_fraction"] == pytest.approx(0.75)
    assert c["val_rise"] == pytest.approx(1.0)  # last 10% -> the last epoch: 2.0 vs 1.0
    assert read_curve([]) is None


def test_fit_sentences_read_at_first_sight():
    """fit.md said 'generalisation gap (val - train) / 1.0% of the baseline's train log loss = 141.9%'."""
    fit = fit_diagnosis(P, reg_metrics(1.0, 1.05), FLAT, reg_meta())
    assert "generalisation gap: val MSE 1.05 is 5.0% above train MSE 1 (overfit above 30.0%)" in fit["reasons"]
    near_zero = fit_diagnosis(P, reg_metrics(0.001, 0.05), FLAT, reg_meta(None))
    (gap,) = [r for r in near_zero["reasons"] + near_zero["notes"] if "generalisation gap" in r]
    assert "train MSE 0.001 is near 0, so val - train = 0.049 is measured against 1.0% of the constant " \
           "baseline's train MSE (0.25): 19.6% (overfit above 30.0%)" in gap
