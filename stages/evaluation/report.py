"""What evaluate writes for people and for DVC plots: reports/fit.md, and the predictions and
confusion tables of a seeded sample of test rows."""


from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.contracts import SPLITS, Meta
from stages.core.params import LOSS_LABEL

if TYPE_CHECKING:  # torch is imported where a model is run: the stage's error paths stay light
    pass


REGRESSION_BINS = 5  # quantile bins of the regression "confusion" plot


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` row indices out of n, seeded, in order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _csv(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def class_labels(meta: Meta) -> list[str]:
    return [str(c) for c in meta.classes]


def quantile_bins(actual: np.ndarray, predicted: np.ndarray, k: int = REGRESSION_BINS) -> tuple[list[str], list[str]]:
    """Regression as a k-class problem: which quantile bin of the actual values each value falls in."""
    edges = np.quantile(actual, np.linspace(0, 1, k + 1)[1:-1])
    name = [f"q{i + 1}" for i in range(k)]
    return [name[i] for i in np.digitize(actual, edges)], [name[i] for i in np.digitize(predicted, edges)]


def plot_tables(task: str, y: np.ndarray, out: np.ndarray, meta: Meta, limit: int) -> tuple[str, str]:
    """reports/predictions.csv (actual, predicted) and reports/confusion.csv (actual, predicted
    categories) for a sample of test rows. Classification: class labels in both. Regression:
    values in the first, quantile bins of the actual values in the second."""
    idx = sample_rows(len(y), limit)
    if task == "classification":
        labels = class_labels(meta)
        rows = [(labels[a], labels[p]) for a, p in zip(y[idx], out[idx].argmax(axis=1))]
        table = _csv(["actual", "predicted"], rows)
        return table, table
    actual, predicted = y[idx].astype(np.float64), out[idx]
    values = _csv(["actual", "predicted"], [(f"{a:.6g}", f"{p:.6g}") for a, p in zip(actual, predicted)])
    bins = _csv(["actual", "predicted"], list(zip(*quantile_bins(actual, predicted))))
    return values, bins


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def cv_line(cv: dict[str, Any], task: str) -> str:
    """eval.json's `cv` in one line: the headline metric's mean ± std over the folds, and each fold's."""
    name, label = ("r2", "R²") if task == "regression" else ("accuracy", "accuracy")
    m = cv[name]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    return (f"{cv['k']}-fold CV on train+val ({cv['n']} rows, a model retrained per fold): {label} "
            f"{fmt(m['mean'])} ± {fmt(m['std'])} (folds {', '.join(fmt(v) for v in m['folds'])})")


def fit_report(report: dict[str, Any], meta: Meta) -> str:
    """reports/fit.md: the verdict, why, what to do, and the test metrics against the yardsticks."""
    fit, task = report["fit"], report["task"]
    source = f"{meta.kind} (synthetic)" if meta.source == "synthetic" else "user file"
    lines = [f"# Fit diagnosis: **{fit['verdict']}**", "",
             f"Task: {task}, data: {source}. Loss judged: {LOSS_LABEL[fit['loss']]} on whole splits.", "",
             "## Why", "", *[f"- {r}" for r in fit["reasons"]], ""]
    if fit["remedies"]:
        lines += ["## Remedies", "", *[f"- {r}" for r in fit["remedies"]], ""]
    if fit["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in fit["notes"]], ""]
    keys = ["mse", "rmse", "mae", "r2"] if task == "regression" else ["accuracy", "f1_macro", "log_loss", "roc_auc"]
    irreducible = report.get("irreducible") or {}
    if task == "regression" and "mse" in irreducible:
        irreducible = {**irreducible, "rmse": float(np.sqrt(irreducible["mse"]))}
    test_split = "test" if "test" in report else "val"
    lines += [f"## {test_split.capitalize()} metrics", "",
              "| metric | model | constant baseline | noise floor |", "|---|---|---|---|"]
    lines += [f"| {k} | {_fmt(report[test_split][k])} | {_fmt(report['baseline'][test_split][k])} "
              f"| {_fmt(irreducible.get(k))} |" for k in keys]
    splits = [s for s in SPLITS if s in report]
    lines += ["", "## All splits", "", "| split | rows | " + " | ".join(keys) + " |",
              "|---" * (len(keys) + 2) + "|"]
    lines += [f"| {s} | {report[s]['n']} | " + " | ".join(_fmt(report[s][k]) for k in keys) + " |" for s in splits]
    if "cv" in report:
        lines += ["", "## Cross-validation", "", cv_line(report["cv"], task)]
    lines += ["", "Figures: learning_curves.png, predictions.png (this folder).", ""]
    return "\n".join(lines)
