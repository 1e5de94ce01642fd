"""Stage `evaluate`: metrics on every split, a constant baseline, the noise floor, and the fit
diagnosis (good / overfit / underfit) with its reasons and remedies.

`evaluate_model` is the in-process entry (a sweep calls it per trial): it returns the content
of metrics/eval.json and writes nothing. `main()` adds the files for people and for DVC plots:
reports/predictions.csv and reports/confusion.csv (a seeded sample of test rows),
reports/learning_curves.png, reports/predictions.png and reports/fit.md.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.artifacts import read_json, write_json, write_text
from stages.dataset import SPLITS, Split, load_meta, load_splits
from stages.diagnosis import LOSS_NAME, fit_diagnosis
from stages.errors import DataError, run_main
from stages.metrics import baseline_metrics, compute_metrics
from stages.params import EvaluateParams, load_params

if TYPE_CHECKING:  # torch is imported where a model is run: the stage's error paths stay light
    from torch import nn

log = logging.getLogger(__name__)

MODEL_PATH = Path("models/model.pt")
TRAIN_METRICS_PATH = Path("metrics/train.json")
HISTORY_PATH = Path("metrics/train_history.csv")
EVAL_PATH = Path("metrics/eval.json")
REPORTS_DIR = Path("reports")
PREDICT_CHUNK = 65536  # rows per forward pass
REGRESSION_BINS = 5  # quantile bins of the regression "confusion" plot


@dataclass
class Evaluation:
    report: dict[str, Any]  # the content of metrics/eval.json
    outputs: dict[str, np.ndarray]  # per split: predictions (N,) or logits (N, K)


# ------------------------------------------------------------------------------- compute


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Model outputs for raw features, in chunks on the model's device, as float64 numpy."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        out = [model(torch.tensor(x[i : i + PREDICT_CHUNK], device=device)).float().cpu().numpy()
               for i in range(0, len(x), PREDICT_CHUNK)]
    return np.concatenate(out).astype(np.float64) if out else np.empty((0,))


def score_outputs(params: EvaluateParams, outputs: dict[str, np.ndarray], splits: dict[str, Split],
                  meta: dict[str, Any], history: list[dict[str, Any]], *,
                  restored_best: bool | None = None) -> dict[str, Any]:
    """eval.json from model outputs per split: metrics, baseline, noise floor and the fit."""
    task = meta["task"]
    n_classes = len(meta["classes"]) if task == "classification" else None
    for name in ("train", "val"):
        if name not in outputs:
            raise DataError(f"evaluate: split {name!r} is needed for the fit diagnosis")
    names = [s for s in SPLITS if s in outputs]
    report: dict[str, Any] = {"task": task}
    for name in names:
        out = outputs[name]
        if not np.isfinite(out).all():
            raise DataError(f"evaluate: the model gives non-finite outputs on the {name} split")
        report[name] = {**compute_metrics(task, splits[name].y, out, n_classes), "n": int(len(out))}
    y_train = splits["train"].y
    report["baseline"] = {name: baseline_metrics(task, y_train, splits[name].y, n_classes) for name in names}
    truth = meta.get("ground_truth")
    report["irreducible"] = truth.get("irreducible") if truth else None
    report["fit"] = fit_diagnosis(params, report, history, meta, restored_best=restored_best)
    return report


def check_model_fits(cfg: dict[str, Any], meta: dict[str, Any]) -> None:
    """The model was trained on this data's features and task (else: re-run train)."""
    if cfg.get("task") != meta["task"] or list(cfg.get("feature_names", [])) != list(meta["feature_names"]):
        raise DataError(
            f"{MODEL_PATH}: trained for task {cfg.get('task')!r} on features {cfg.get('feature_names')}, "
            f"but data/meta.json has task {meta['task']!r} and features {meta['feature_names']} "
            "(re-run the train stage)"
        )


def run(params: EvaluateParams, model: nn.Module, splits: dict[str, Split], meta: dict[str, Any],
        history: list[dict[str, Any]], *, restored_best: bool | None = None) -> Evaluation:
    outputs = {name: predict(model, split.x) for name, split in splits.items()}
    report = score_outputs(params, outputs, splits, meta, history, restored_best=restored_best)
    return Evaluation(report=report, outputs=outputs)


def evaluate_model(params: EvaluateParams, model: nn.Module, splits: dict[str, Split], meta: dict[str, Any],
                   history: list[dict[str, Any]], *, restored_best: bool | None = None) -> dict[str, Any]:
    """The whole content of metrics/eval.json for an in-memory model; writes nothing.

    `history` is TrainResult.history (per-epoch train/val loss); `restored_best` is
    TrainResult.metrics["restored_best"] when known (else inferred from the curve).
    """
    return run(params, model, splits, meta, history, restored_best=restored_best).report


# --------------------------------------------------------------------------- plot data


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


def class_labels(meta: dict[str, Any]) -> list[str]:
    return [str(c) for c in meta["classes"]]


def quantile_bins(actual: np.ndarray, predicted: np.ndarray, k: int = REGRESSION_BINS) -> tuple[list[str], list[str]]:
    """Regression as a k-class problem: which quantile bin of the actual values each value falls in."""
    edges = np.quantile(actual, np.linspace(0, 1, k + 1)[1:-1])
    name = [f"q{i + 1}" for i in range(k)]
    return [name[i] for i in np.digitize(actual, edges)], [name[i] for i in np.digitize(predicted, edges)]


def plot_tables(task: str, y: np.ndarray, out: np.ndarray, meta: dict[str, Any], limit: int) -> tuple[str, str]:
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


# ------------------------------------------------------------------------------- report


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def fit_report(report: dict[str, Any], meta: dict[str, Any]) -> str:
    """reports/fit.md: the verdict, why, what to do, and the test metrics against the yardsticks."""
    fit, task = report["fit"], report["task"]
    source = f"{meta.get('kind')} (synthetic)" if meta.get("source") == "synthetic" else "user file"
    lines = [f"# Fit diagnosis: **{fit['verdict']}**", "",
             f"Task: {task}, data: {source}. Loss judged: {LOSS_NAME[fit['loss']]} on whole splits.", "",
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
    lines += ["", "Figures: learning_curves.png, predictions.png (this folder).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main


def read_history(path: str | Path = HISTORY_PATH) -> list[dict[str, Any]]:
    """metrics/train_history.csv as a list of per-epoch dicts (numbers as float, epoch as int)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the train stage first)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]
    except (TypeError, ValueError):
        raise DataError(f"{path}: not a training history (columns epoch, train_loss, val_loss, ...)") from None


def write_outputs(ev: Evaluation, splits: dict[str, Split], meta: dict[str, Any], history: list[dict[str, Any]],
                  params: EvaluateParams, reports_dir: Path = REPORTS_DIR, eval_path: Path = EVAL_PATH) -> None:
    from stages import plots  # matplotlib is only needed for the files, not for evaluate_model

    report, task = ev.report, meta["task"]
    split = "test" if "test" in ev.outputs else "val"
    y, out = splits[split].y, ev.outputs[split]
    values, categories = plot_tables(task, y, out, meta, params.plot_points)
    write_text(reports_dir / "predictions.csv", values)
    write_text(reports_dir / "confusion.csv", categories)
    verdict = report["fit"]["verdict"]
    plots.learning_curves_png(history, reports_dir / "learning_curves.png", LOSS_NAME.get(report["fit"]["loss"], "loss"),
                              title=f"learning curves (verdict: {verdict})")
    if task == "regression":
        idx = sample_rows(len(y), params.plot_points)
        plots.pred_vs_actual_png(y[idx], out[idx], reports_dir / "predictions.png",
                                 title=f"{split}: predicted vs actual (R² {report[split]['r2']:.3f})")
    else:
        plots.confusion_matrix_png(report[split]["confusion_matrix"], class_labels(meta),
                                   reports_dir / "predictions.png",
                                   title=f"{split}: confusion matrix (accuracy {report[split]['accuracy']:.3f})")
    write_text(reports_dir / "fit.md", fit_report(report, meta))
    # the metrics last: a run that failed on the way leaves the previous eval.json alone
    write_json(eval_path, report)


def main() -> None:
    from stages.models import load_model

    params = load_params()
    meta = load_meta()
    splits = load_splits(meta=meta)
    model, cfg = load_model(MODEL_PATH)
    check_model_fits(cfg, meta)
    history = read_history(HISTORY_PATH)
    train_metrics = read_json(TRAIN_METRICS_PATH) if TRAIN_METRICS_PATH.exists() else {}
    ev = run(params.evaluate, model, splits, meta, history, restored_best=train_metrics.get("restored_best"))
    write_outputs(ev, splits, meta, history, params.evaluate)
    fit = ev.report["fit"]
    log.info("verdict: %s", fit["verdict"])
    for reason in fit["reasons"]:
        log.info("  %s", reason)
    for remedy in fit["remedies"]:
        log.info("  remedy: %s", remedy)


if __name__ == "__main__":
    run_main(main, "evaluate")
