"""The fit diagnosis: is the model good, overfit, underfit, or both? With reasons and remedies.

The loss judged is MSE for regression and log loss for classification (the training objective
of the default losses), always measured by the evaluation itself on whole splits, so train and
val compare like with like. The tests:

- underfit, with ground truth (synthetic data): the train loss is more than
  `underfit_noise_ratio` times the irreducible loss recorded in data/meta.json. A model cannot
  beat the noise floor, but a model with enough capacity gets close to it on its own train set.
- underfit, without ground truth: the train skill over the constant baseline (regression R²,
  classification 1 - error rate / baseline error rate) is below `min_skill`.
- overfit, gap: (val - train) / train is above `overfit_gap`, the absolute gap is not
  negligible next to the constant baseline's loss, and it is more than `gap_z` standard errors
  (small splits: a val loss measured on 45 rows moves by 20% from sampling alone).
- overfit, learning curve: the val loss bottomed out early (best epoch before
  `early_best_fraction` of the epochs run) and ended more than `val_rise` above its minimum.
  This judges the evaluated model only when it is the last epoch's. When early stopping
  restored the best epoch's weights, the evaluated model is the best one; the curve then only
  says that longer training would overfit, which is reported as a note, not a verdict.

Losses below `negligible` x the baseline's loss count as zero: with noise-free data the noise
floor is 0 and a good model's train loss tends to 0, where plain ratios would explode.
"""

from __future__ import annotations

import math
from typing import Any

from stages.core.params import EvaluateParams

LOSS_OF_TASK = {"regression": "mse", "classification": "log_loss"}
LOSS_NAME = {"mse": "MSE", "log_loss": "log loss"}
TINY = 1e-12

UNDERFIT_REMEDIES = {
    "capacity": "more capacity: train.model mlp, wider or deeper train.hidden",
    "regularisation": "less regularisation: lower train.reg_strength, train.dropout or train.weight_decay",
    "epochs": "train longer: raise train.epochs (and train.early_stopping.patience)",
    "lr": "a better learning rate: tune train.lr (too low crawls, too high stalls) or use train.schedule",
}
OVERFIT_REMEDIES = {
    "data": "more training data: raise data.n_samples (or collect more rows)",
    "regularisation": "stronger regularisation: raise train.reg_strength (l2/l1) or train.weight_decay (adamw)",
    "dropout": "dropout: train.dropout 0.1-0.3",
    "early_stopping": "early stopping: set train.early_stopping.patience (e.g. 20) to keep the best epoch",
    "smaller": "a smaller model: fewer or narrower train.hidden layers",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return f"{x:.4g}"


def read_curve(history: list[dict[str, Any]], tail_fraction: float = 0.1) -> dict[str, Any] | None:
    """Best epoch, epochs run and the val loss's rise from its minimum to the end of training.

    The end is the mean val loss of the last 10% of epochs (at least one), so a single noisy
    last epoch neither hides nor fakes a rise.
    """
    vals = [float(r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if not vals:
        return None
    epochs_run = len(vals)
    best_idx = min(range(epochs_run), key=vals.__getitem__)
    k = max(1, round(tail_fraction * epochs_run))
    end = sum(vals[-k:]) / k
    best = vals[best_idx]
    return {
        "epochs_run": epochs_run,
        "best_epoch": int(history[best_idx].get("epoch", best_idx + 1)),
        "best_epoch_fraction": (best_idx + 1) / epochs_run,
        "best_val_loss": best,
        "end_val_loss": end,
        "val_rise": (end - best) / max(abs(best), TINY),
        "last_val_loss": vals[-1],
    }


def infer_restored(curve: dict[str, Any], val_loss: float) -> bool:
    """Was the evaluated model the best epoch's (early stopping restored it) or the last one's?

    Used when the trainer's `restored_best` is not given: the model's own val loss is closer to
    the curve's minimum than to its last point. Exact only when the training loss is the one
    judged here (mse / cross-entropy); with Huber it is a guess, so pass `restored_best`.
    """
    return abs(val_loss - curve["best_val_loss"]) <= abs(val_loss - curve["last_val_loss"])


def fit_diagnosis(params: EvaluateParams, metrics: dict[str, Any], history: list[dict[str, Any]],
                  meta: dict[str, Any], *, restored_best: bool | None = None) -> dict[str, Any]:
    """The verdict with its reasons, remedies, notes and the numbers it used.

    `metrics` holds per-split metrics ("train", "val") and the constant baseline's
    ("baseline": {"train", "val"}), as `compute_metrics` / `baseline_metrics` return them.
    `history` is the trainer's per-epoch records (may be empty). `restored_best` says whether
    early stopping restored the best epoch's weights (None: inferred from the curve).
    """
    task = meta["task"]
    loss = LOSS_OF_TASK[task]
    name = LOSS_NAME[loss]
    train, val = metrics["train"], metrics["val"]
    base_train, base_val = metrics["baseline"]["train"], metrics["baseline"]["val"]
    train_loss, val_loss = float(train[loss]), float(val[loss])
    floor_train = params.negligible * float(base_train[loss])  # a loss this small counts as zero
    floor_val = params.negligible * float(base_val[loss])

    flags: dict[str, list[str]] = {"underfit": [], "overfit": []}
    passed: list[str] = []
    notes: list[str] = []

    # ---- underfit: against the noise floor when it is known, else against the baseline
    if task == "regression":
        skill = float(train["r2"])
        val_skill = float(val["r2"])
        skill_name = "R²"
    else:
        skill = 1.0 - float(train["error_rate"]) / max(float(base_train["error_rate"]), TINY)
        val_skill = 1.0 - float(val["error_rate"]) / max(float(base_val["error_rate"]), TINY)
        skill_name = "skill (1 - error rate / baseline error rate)"
    irreducible = ((meta.get("ground_truth") or {}).get("irreducible")) or {}
    noise_floor = irreducible.get(loss)
    noise_ratio = None
    if noise_floor is not None:
        noise_floor = float(noise_floor)
        noise_ratio = train_loss / max(noise_floor, floor_train, TINY)
        text = (f"train {name} {_num(train_loss)} is {noise_ratio:.2f}x the noise floor {_num(noise_floor)} "
                f"(underfit above {params.underfit_noise_ratio:g}x)")
        (flags["underfit"] if noise_ratio > params.underfit_noise_ratio else passed).append(text)
    else:
        text = (f"train {skill_name} {skill:.3f} over the constant baseline "
                f"(underfit below {params.min_skill:g}; no ground truth to compare with the noise floor)")
        (flags["underfit"] if skill < params.min_skill else passed).append(text)

    # ---- overfit: the generalisation gap of the evaluated model
    diff = val_loss - train_loss
    gap = diff / max(train_loss, floor_train, TINY)
    gap_vs_baseline = diff / max(float(base_val[loss]), TINY)
    se = math.hypot(float(train.get(f"{loss}_se", 0.0)), float(val.get(f"{loss}_se", 0.0)))
    gap_z = diff / se if se > 0 else None
    per = "train" if train_loss >= floor_train else f"{_pct(params.negligible)} of the baseline's train {name}"
    text = (f"generalisation gap (val - train) / {per} = {_pct(gap)}: val {name} {_num(val_loss)} "
            f"vs train {_num(train_loss)} (overfit above {_pct(params.overfit_gap)})")
    if gap <= params.overfit_gap:
        passed.append(text)
    elif diff <= floor_val:
        passed.append(text + f"; but under {_pct(params.negligible)} of the baseline's val {name}: negligible")
    elif gap_z is not None and gap_z <= params.gap_z:
        passed.append(text + f"; but only {gap_z:.1f} standard errors (needs {params.gap_z:g}): "
                      f"within the sampling noise of {val.get('n', '?')} val rows")
    else:
        flags["overfit"].append(text + (f", {gap_z:.1f} standard errors" if gap_z is not None else ""))

    # ---- overfit: the learning curve
    curve = read_curve(history)
    if curve is None:
        notes.append("no learning curve (training history) given: the curve was not judged")
    else:
        if restored_best is None:
            restored_best = infer_restored(curve, val_loss)
        early = curve["best_epoch_fraction"] < params.early_best_fraction
        rose = curve["val_rise"] > params.val_rise
        shape = (f"val loss bottomed out at epoch {curve['best_epoch']} of {curve['epochs_run']} "
                 f"({_pct(curve['best_epoch_fraction'])} of the run) and ended {_pct(curve['val_rise'])} "
                 f"above its minimum (overfit when before {_pct(params.early_best_fraction)} "
                 f"and above {_pct(params.val_rise)})")
        if curve["best_epoch"] == curve["epochs_run"]:
            shape = (f"val loss was lowest at the last epoch ({curve['epochs_run']}): "
                     "the learning curve shows no overfitting")
        if early and rose and not restored_best:
            flags["overfit"].append(shape)
        elif early and rose:
            notes.append(shape + f"; early stopping restored the epoch-{curve['best_epoch']} weights, "
                         "so the evaluated model is the best one: longer training would overfit")
        else:
            passed.append(shape)
        if curve["best_epoch"] == curve["epochs_run"] and curve["epochs_run"] > 1:
            notes.append(f"val loss was still falling at the last epoch ({curve['epochs_run']}): "
                         "more epochs may help")

    verdict = "+".join(k for k in ("overfit", "underfit") if flags[k]) or "good"
    reasons = flags["overfit"] + flags["underfit"] if verdict != "good" else passed
    if verdict != "good":
        notes = [f"passed: {p}" for p in passed] + notes

    return {
        "verdict": verdict,
        "reasons": reasons,
        "remedies": _remedies(flags, curve, restored_best),
        "notes": notes,
        "loss": loss,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "gap": gap,
        "gap_vs_baseline": gap_vs_baseline,
        "gap_z": gap_z,
        "noise_floor": noise_floor,
        "noise_ratio": noise_ratio,
        "skill": skill,
        "val_skill": val_skill,
        "best_epoch": curve["best_epoch"] if curve else None,
        "epochs_run": curve["epochs_run"] if curve else None,
        "best_epoch_fraction": curve["best_epoch_fraction"] if curve else None,
        "val_rise": curve["val_rise"] if curve else None,
        "restored_best": restored_best,
    }


def _remedies(flags: dict[str, list[str]], curve: dict[str, Any] | None, restored_best: bool | None) -> list[str]:
    """Remedies for what was flagged, the most likely first."""
    if flags["overfit"] and flags["underfit"]:
        # the usual cures pull in opposite directions (capacity vs a smaller model): what helps
        # both is more data and a training run that actually converges
        return ["overfit and underfit at once: check the data first (too few rows, shifted or "
                "leaking splits)", OVERFIT_REMEDIES["data"], UNDERFIT_REMEDIES["lr"], UNDERFIT_REMEDIES["epochs"]]
    if flags["overfit"]:
        keys = ["data", "regularisation", "dropout", "early_stopping", "smaller"]
        if restored_best:  # early stopping is already on
            keys.remove("early_stopping")
        return [OVERFIT_REMEDIES[k] for k in keys]
    if flags["underfit"]:
        keys = ["capacity", "regularisation", "epochs", "lr"]
        if curve is not None and curve["best_epoch"] == curve["epochs_run"]:
            keys.insert(0, keys.pop(keys.index("epochs")))  # still improving: train longer first
        return [UNDERFIT_REMEDIES[k] for k in keys]
    return []
