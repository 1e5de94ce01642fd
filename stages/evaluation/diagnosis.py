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
from dataclasses import dataclass, field
from typing import Any

from stages.core.contracts import Meta
from stages.core.params import JUDGED_LOSS, LOSS_LABEL, EvaluateParams

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


@dataclass
class Judgement:
    """One test of the diagnosis: what it flags (if anything), its sentences and its numbers."""

    flag: str | None = None  # "underfit" | "overfit" | None (passed)
    passed: list[str] = field(default_factory=list)  # sentences of what passed
    flagged: list[str] = field(default_factory=list)  # sentences of what failed
    notes: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)


def _skill(task: str, split: dict[str, Any], base: dict[str, Any]) -> float:
    """R² (regression) or 1 - error rate / the constant baseline's error rate (classification)."""
    if task == "regression":
        return float(split["r2"])
    return 1.0 - float(split["error_rate"]) / max(float(base["error_rate"]), TINY)


def judge_underfit(params: EvaluateParams, task: str, metrics: dict[str, Any], noise_floor: float | None) -> Judgement:
    """Underfit: the train loss against the noise floor when it is known, else the train skill
    over the constant baseline."""
    loss = JUDGED_LOSS[task]
    name = LOSS_LABEL[loss]
    train, base_train = metrics["train"], metrics["baseline"]["train"]
    train_loss = float(train[loss])
    skill = _skill(task, train, base_train)
    j = Judgement(numbers={"skill": skill, "val_skill": _skill(task, metrics["val"], metrics["baseline"]["val"]),
                           "noise_floor": None, "noise_ratio": None})
    if noise_floor is not None:
        floor_train = params.negligible * float(base_train[loss])  # a loss this small counts as zero
        ratio = train_loss / max(noise_floor, floor_train, TINY)
        j.numbers.update(noise_floor=noise_floor, noise_ratio=ratio)
        text = (f"train {name} {_num(train_loss)} is {ratio:.2f}x the noise floor {_num(noise_floor)} "
                f"(underfit above {params.underfit_noise_ratio:g}x)")
        bad = ratio > params.underfit_noise_ratio
    else:
        skill_name = "R²" if task == "regression" else "skill (1 - error rate / baseline error rate)"
        text = (f"train {skill_name} {skill:.3f} over the constant baseline "
                f"(underfit below {params.min_skill:g}; no ground truth to compare with the noise floor)")
        bad = skill < params.min_skill
    if bad:
        j.flag, j.flagged = "underfit", [text]
    else:
        j.passed = [text]
    return j


def judge_gap(params: EvaluateParams, task: str, metrics: dict[str, Any]) -> Judgement:
    """Overfit by the generalisation gap of the evaluated model: (val - train) / train, unless
    negligible against the baseline or within the sampling noise (gap_z standard errors)."""
    loss = JUDGED_LOSS[task]
    name = LOSS_LABEL[loss]
    train, val = metrics["train"], metrics["val"]
    train_loss, val_loss = float(train[loss]), float(val[loss])
    floor_train = params.negligible * float(metrics["baseline"]["train"][loss])
    floor_val = params.negligible * float(metrics["baseline"]["val"][loss])
    diff = val_loss - train_loss
    gap = diff / max(train_loss, floor_train, TINY)
    se = math.hypot(float(train.get(f"{loss}_se", 0.0)), float(val.get(f"{loss}_se", 0.0)))
    gap_z = diff / se if se > 0 else None
    j = Judgement(numbers={"gap": gap, "gap_vs_baseline": diff / max(float(metrics["baseline"]["val"][loss]), TINY),
                           "gap_z": gap_z})
    if train_loss >= floor_train:
        text = (f"generalisation gap: val {name} {_num(val_loss)} is {_pct(abs(gap))} {'above' if gap >= 0 else 'below'} "
                f"train {name} {_num(train_loss)} (overfit above {_pct(params.overfit_gap)})")
    else:  # a train loss near 0 would make any gap huge: measure it against the baseline instead
        text = (f"generalisation gap: train {name} {_num(train_loss)} is near 0, so val - train = {_num(diff)} is "
                f"measured against {_pct(params.negligible)} of the constant baseline's train {name} "
                f"({_num(floor_train)}): {_pct(gap)} (overfit above {_pct(params.overfit_gap)})")
    if gap <= params.overfit_gap:
        j.passed.append(text)
    elif diff <= floor_val:
        j.passed.append(text + f"; but under {_pct(params.negligible)} of the baseline's val {name}: negligible")
    elif gap_z is not None and gap_z <= params.gap_z:
        j.passed.append(text + f"; but only {gap_z:.1f} standard errors (needs {params.gap_z:g}): "
                        f"within the sampling noise of {val.get('n', '?')} val rows")
    else:
        j.flag = "overfit"
        j.flagged.append(text + (f", {gap_z:.1f} standard errors" if gap_z is not None else ""))
    return j


def judge_curve(params: EvaluateParams, curve: dict[str, Any] | None, restored_best: bool) -> Judgement:
    """Overfit by the learning curve: the val loss bottomed out early AND rose by the end, in the
    model that was evaluated (a restored best epoch is a note, not a flag)."""
    j = Judgement()
    if curve is None:
        j.notes.append("no learning curve (training history) given: the curve was not judged")
        return j
    early = curve["best_epoch_fraction"] < params.early_best_fraction
    rose = curve["val_rise"] > params.val_rise
    shape = (f"val loss bottomed out at epoch {curve['best_epoch']} of {curve['epochs_run']} "
             f"({_pct(curve['best_epoch_fraction'])} of the way through) and ended {_pct(curve['val_rise'])} "
             f"above that minimum (overfitting shows as a minimum in the first {_pct(params.early_best_fraction)} "
             f"of the run followed by a rise of more than {_pct(params.val_rise)})")
    if curve["best_epoch"] == curve["epochs_run"]:
        shape = (f"val loss was lowest at the last epoch ({curve['epochs_run']}): "
                 "the learning curve shows no overfitting")
    if early and rose and not restored_best:
        j.flag, j.flagged = "overfit", [shape]
    elif early and rose:
        j.notes.append(shape + f"; early stopping restored the epoch-{curve['best_epoch']} weights, "
                       "so the evaluated model is the best one: longer training would overfit")
    else:
        j.passed.append(shape)
    if curve["best_epoch"] == curve["epochs_run"] and curve["epochs_run"] > 1:
        j.notes.append(f"val loss was still falling at the last epoch ({curve['epochs_run']}): "
                       "more epochs may help")
    return j


def fit_diagnosis(params: EvaluateParams, metrics: dict[str, Any], history: list[dict[str, Any]],
                  meta: Meta, *, restored_best: bool | None = None) -> dict[str, Any]:
    """The verdict with its reasons, remedies, notes and the numbers it used.

    `metrics` holds per-split metrics ("train", "val") and the constant baseline's
    ("baseline": {"train", "val"}), as `compute_metrics` / `baseline_metrics` return them.
    `history` is the trainer's per-epoch records (may be empty). `restored_best` says whether
    early stopping restored the best epoch's weights (None: inferred from the curve).
    """
    task = meta.task
    loss = JUDGED_LOSS[task]
    irreducible = ((meta.ground_truth or {}).get("irreducible")) or {}
    noise_floor = float(irreducible[loss]) if irreducible.get(loss) is not None else None
    curve = read_curve(history)
    if curve is not None and restored_best is None:
        restored_best = infer_restored(curve, float(metrics["val"][loss]))
    judged = [judge_underfit(params, task, metrics, noise_floor), judge_gap(params, task, metrics),
              judge_curve(params, curve, restored_best)]

    flags = {k: [t for j in judged if j.flag == k for t in j.flagged] for k in ("underfit", "overfit")}
    passed = [t for j in judged for t in j.passed]
    notes = [n for j in judged for n in j.notes]
    verdict = "+".join(k for k in ("overfit", "underfit") if flags[k]) or "good"
    reasons = flags["overfit"] + flags["underfit"] if verdict != "good" else passed
    if verdict != "good":
        notes = [f"passed: {p}" for p in passed] + notes
    numbers = {k: v for j in judged for k, v in j.numbers.items()}
    return {
        "verdict": verdict,
        "reasons": reasons,
        "remedies": _remedies(flags, curve, restored_best),
        "notes": notes,
        "loss": loss,
        "train_loss": float(metrics["train"][loss]),
        "val_loss": float(metrics["val"][loss]),
        **{k: numbers[k] for k in ("gap", "gap_vs_baseline", "gap_z", "noise_floor", "noise_ratio",
                                   "skill", "val_skill")},
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
