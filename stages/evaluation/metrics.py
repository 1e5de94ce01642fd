"""Evaluation metrics in plain numpy (no scikit-learn): pure functions of labels and outputs.

Regression: mse, rmse, mae, r2. Classification: accuracy, error_rate, f1_macro, log_loss,
roc_auc (one-vs-rest macro average for more than two classes) and the confusion matrix.
The loss of each task also gets its standard error (mse_se, log_loss_se), so a difference
between two splits can be told apart from sampling noise.
`baseline_metrics` scores the constant predictor fitted on the train split (its mean, or its
class frequencies), the yardstick every model must beat.

Every value is a finite float (or None where a metric is undefined, e.g. ROC AUC with a
single class present), so the result can be written as strict JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TASKS = ("regression", "classification")
# probabilities are clipped here before the log, so one confident mistake costs ~34.5 nats, not inf
LOG_LOSS_EPS = 1e-15


def _task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task: unknown task {task!r} (allowed: {', '.join(TASKS)})")
    return task


def standard_error(per_row: np.ndarray) -> float:
    """Standard error of a mean over rows (0 for a single row): how much a metric that is a mean
    of per-row losses would move on another sample of the same size."""
    n = per_row.size
    return float(np.std(per_row, ddof=1) / np.sqrt(n)) if n > 1 else 0.0


# ----------------------------------------------------------------------------- regression


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and R² (computed in float64)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"regression: {p.size} predictions for {y.size} targets")
    if y.size == 0:
        raise ValueError("regression: no rows to score")
    err = p - y
    sq = err**2
    mse = float(np.mean(sq))
    sst = float(np.sum((y - y.mean()) ** 2))
    sse = float(np.sum(err**2))
    # a constant target has no variance to explain: R² is 1 for a perfect fit, else 0 (sklearn's choice)
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(err))), "r2": float(r2),
            "mse_se": standard_error(sq)}


# ------------------------------------------------------------------------- classification


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (scipy's rankdata 'average')."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # start of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def binary_roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic; ties count one half.

    None when only one class is present (the curve is undefined).
    """
    pos = np.asarray(is_positive, dtype=bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(score)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """Binary: AUC of P(class 1). Several classes: macro mean of one-vs-rest AUCs over the
    classes that occur in y_true (a class with no positives has no curve). None if undefined."""
    y = np.asarray(y_true)
    k = proba.shape[1]
    if k == 2:
        return binary_roc_auc(y == 1, proba[:, 1])
    aucs = [a for c in range(k) if (a := binary_roc_auc(y == c, proba[:, c])) is not None]
    return float(np.mean(aucs)) if aucs else None


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = actual class, columns = predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_macro(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in y_true or in the predictions.

    A class that occurs but is never predicted correctly scores 0 (sklearn's zero_division=0).
    """
    tp = np.diag(cm).astype(np.float64)
    actual, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (actual + predicted) > 0
    if not present.any():
        return 0.0
    f1 = np.divide(2 * tp, actual + predicted, out=np.zeros_like(tp), where=(actual + predicted) > 0)
    return float(f1[present].mean())


def classification_metrics_from_proba(y_true: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """All classification metrics from class probabilities (N, K)."""
    y = np.asarray(y_true, dtype=np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != y.size:
        raise ValueError(f"classification: probabilities of shape {proba.shape} for {y.size} labels")
    if y.size == 0:
        raise ValueError("classification: no rows to score")
    k = proba.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"classification: labels must be in 0..{k - 1}, got {y.min()}..{y.max()}")
    pred = proba.argmax(axis=1)
    cm = confusion_matrix(y, pred, k)
    accuracy = float(np.trace(cm) / y.size)
    nll = -np.log(np.clip(proba[np.arange(y.size), y], LOG_LOSS_EPS, 1.0))
    return {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "f1_macro": f1_macro(cm),
        "log_loss": float(np.mean(nll)),
        "log_loss_se": standard_error(nll),
        "roc_auc": roc_auc(y, proba),
        "confusion_matrix": cm.tolist(),
    }


# ------------------------------------------------------------------------------ public API


def compute_metrics(task: str, y_true: np.ndarray, y_pred_or_logits: np.ndarray,
                    n_classes: int | None = None) -> dict[str, Any]:
    """Metrics of one split: regression predictions (N,), or classification logits (N, K).

    `n_classes` (classification) checks the logits' width when given.
    """
    if _task(task) == "regression":
        return regression_metrics(y_true, y_pred_or_logits)
    logits = np.asarray(y_pred_or_logits)
    if logits.ndim != 2:
        raise ValueError(f"classification: expected logits of shape (N, K), got {logits.shape}")
    if n_classes is not None and logits.shape[1] != n_classes:
        raise ValueError(f"classification: logits have {logits.shape[1]} columns, expected {n_classes} classes")
    return classification_metrics_from_proba(y_true, softmax(logits))


def baseline_metrics(task: str, y_train: np.ndarray, y_eval: np.ndarray,
                     n_classes: int | None = None) -> dict[str, Any]:
    """Metrics of the constant predictor fitted on y_train, scored on y_eval.

    Regression predicts the train mean. Classification predicts the train class frequencies
    as probabilities (so the majority class as the label); `n_classes` defaults to the
    largest label seen plus one.
    """
    if _task(task) == "regression":
        y_train = np.asarray(y_train, dtype=np.float64)
        return regression_metrics(y_eval, np.full(np.shape(y_eval), y_train.mean()))
    y_train = np.asarray(y_train, dtype=np.int64)
    y_eval = np.asarray(y_eval, dtype=np.int64)
    k = n_classes or int(max(y_train.max(initial=0), y_eval.max(initial=0))) + 1
    freq = np.bincount(y_train, minlength=k).astype(np.float64) / max(y_train.size, 1)
    return classification_metrics_from_proba(y_eval, np.tile(freq, (y_eval.size, 1)))


# ------------------------------------------------------------------------ confidence intervals

BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
# above this many rows the resampled means are drawn from their normal (CLT) limit instead of
# resampling rows: 1,000 resamples of a 10M-row run's 1.5M test rows took over a minute, and at
# this size the two agree to within the intervals' own Monte Carlo noise (tested)
RESAMPLE_ROWS = 50_000


def resampled_means(rows: dict[str, np.ndarray], resamples: int, rng: np.random.Generator,
                    resample_rows: int = RESAMPLE_ROWS) -> dict[str, np.ndarray]:
    """The means of each row statistic over `resamples` bootstrap resamples of the rows: drawn
    row by row (in blocks, so memory stays at a few MB) up to `resample_rows` rows, else from
    the means' joint normal limit (their covariance / n), which costs one pass over the rows."""
    keys = list(rows)
    n = len(rows[keys[0]])
    if n > resample_rows:
        stats = np.stack([rows[k] for k in keys])
        cov = np.atleast_2d(np.cov(stats, ddof=0)) / n
        draws = rng.multivariate_normal(stats.mean(axis=1), cov, size=resamples)
        return {k: draws[:, i] for i, k in enumerate(keys)}
    means: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    block = max(1, 2_000_000 // n)
    for start in range(0, resamples, block):
        idx = rng.integers(0, n, size=(min(block, resamples - start), n))
        for k, v in rows.items():
            means[k].append(v[idx].mean(axis=1))
    return {k: np.concatenate(v) for k, v in means.items()}


def bootstrap_ci(task: str, y_true: np.ndarray, y_pred_or_logits: np.ndarray, seed: int = 0,
                 resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                 resample_rows: int = RESAMPLE_ROWS) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals of the per-row metrics (and R²), seeded: the same inputs
    give the same intervals. Regression: mse, rmse, mae, r2; classification: accuracy, log_loss.
    Splits over `resample_rows` rows use the resampled means' normal limit (resampled_means)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y_true)
    n = len(y)
    if n < 2:
        return {}
    if _task(task) == "regression":
        err = np.asarray(y_pred_or_logits, dtype=np.float64) - y.astype(np.float64)
        rows = {"se": err**2, "ae": np.abs(err), "y": y.astype(np.float64), "y2": y.astype(np.float64) ** 2}
    else:
        proba = softmax(np.asarray(y_pred_or_logits))
        p_true = np.clip(proba[np.arange(n), y.astype(np.int64)], 1e-15, 1.0)
        rows = {"hit": (proba.argmax(axis=1) == y).astype(np.float64), "nll": -np.log(p_true)}
    m = resampled_means(rows, resamples, rng, resample_rows)
    if _task(task) == "regression":
        var = m["y2"] - m["y"] ** 2
        draws = {"mse": m["se"], "rmse": np.sqrt(m["se"]), "mae": m["ae"],
                 "r2": 1 - m["se"] / np.where(var > 0, var, np.nan)}
    else:
        draws = {"accuracy": m["hit"], "log_loss": m["nll"]}
    q = (1 - level) / 2
    return {k: {"low": float(np.nanquantile(v, q)), "high": float(np.nanquantile(v, 1 - q)), "level": level}
            for k, v in draws.items()}
