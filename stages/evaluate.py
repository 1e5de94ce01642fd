"""Stage `evaluate`: metrics on every split, a constant baseline, the noise floor, and the fit
diagnosis (good / overfit / underfit) with its reasons and remedies.

The stage scores the model's outputs and the targets that train saved next to the model
(models/outputs.npz, bound to models/model.pt and to the data by their digests): it loads no
torch and reads no parquet file.
`evaluate_model` (stages/evaluation/scoring.py) is the in-process entry for a model in memory (a
sweep calls it per trial): it returns the content of metrics/eval.json and writes nothing.
`main()` adds the files for people and for DVC plots:
reports/predictions.csv and reports/confusion.csv (a seeded sample of test rows),
reports/learning_curves.png, reports/predictions.png and reports/fit.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.contracts import (
    CONFUSION_CSV,
    EVAL_METRICS_PATH,
    FIT_REPORT_PATH,
    HISTORY_PATH,
    LEARNING_CURVES_PNG,
    PREDICTIONS_CSV,
    PREDICTIONS_PNG,
    REPORTS_DIR,
    TRAIN_METRICS_PATH,
    Meta,
    check_model_fits,
    load_meta,
    read_history,
    read_model_outputs,
)
from stages.core.errors import run_main
from stages.core.io import read_json, write_json, write_text
from stages.core.params import LOSS_LABEL, EvaluateParams, Params, load_params
from stages.evaluation.report import class_labels, fit_report, plot_tables, sample_rows
from stages.evaluation.scoring import Evaluation, score_outputs

log = logging.getLogger(__name__)


def write_outputs(ev: Evaluation, targets: dict[str, np.ndarray], meta: Meta, history: list[dict[str, Any]],
                  params: EvaluateParams, reports_dir: Path = REPORTS_DIR, eval_path: Path = EVAL_METRICS_PATH) -> None:
    from stages.evaluation import plots

    report, task = ev.report, meta.task
    split = "test" if "test" in ev.outputs else "val"
    y, out = targets[split], ev.outputs[split]
    values, categories = plot_tables(task, y, out, meta, params.plot_points)
    write_text(reports_dir / PREDICTIONS_CSV.name, values)
    write_text(reports_dir / CONFUSION_CSV.name, categories)
    verdict = report["fit"]["verdict"]
    plots.learning_curves_png(history, reports_dir / LEARNING_CURVES_PNG.name, LOSS_LABEL.get(report["fit"]["loss"], "loss"),
                              title=f"learning curves (verdict: {verdict})", noise_floor=report["fit"]["noise_floor"])
    if task == "regression":
        idx = sample_rows(len(y), params.plot_points)
        plots.pred_vs_actual_png(y[idx], out[idx], reports_dir / PREDICTIONS_PNG.name,
                                 title=f"{split}: predicted vs actual (R² {report[split]['r2']:.3f})")
    else:
        plots.confusion_matrix_png(report[split]["confusion_matrix"], class_labels(meta),
                                   reports_dir / PREDICTIONS_PNG.name,
                                   title=f"{split}: confusion matrix (accuracy {report[split]['accuracy']:.3f})")
    write_text(reports_dir / FIT_REPORT_PATH.name, fit_report(report, meta))
    # the metrics last: a run that failed on the way leaves the previous eval.json alone
    write_json(eval_path, report)


def cross_validation(params: Params, meta: Meta) -> dict[str, Any]:
    """eval.json's `cv` (evaluate.cv_folds > 0): k models retrained with the train params."""
    from stages.evaluation.cv import cross_validate  # the training loop and torch: only when CV is on

    # the stage reads no feature column otherwise: cross_validate loads train+val itself
    return cross_validate(params.train, meta, params.evaluate.cv_folds,
                          min_category_count=params.data.min_category_count)


def main() -> None:
    params = load_params()
    meta = load_meta()
    # the outputs and targets train saved with the model: no torch and no parquet read here
    saved = read_model_outputs()
    check_model_fits(saved.config, meta)
    outputs, targets = saved.outputs, saved.targets
    history = read_history(HISTORY_PATH)
    train_metrics = read_json(TRAIN_METRICS_PATH) if TRAIN_METRICS_PATH.exists() else {}
    report = score_outputs(params.evaluate, outputs, targets, meta, history,
                           restored_best=train_metrics.get("restored_best"))
    if params.evaluate.cv_folds:
        report["cv"] = cross_validation(params, meta)
    ev = Evaluation(report=report, outputs=outputs)
    write_outputs(ev, targets, meta, history, params.evaluate)
    fit = ev.report["fit"]
    log.info("verdict: %s", fit["verdict"])
    for reason in fit["reasons"]:
        log.info("  %s", reason)
    for remedy in fit["remedies"]:
        log.info("  remedy: %s", remedy)


if __name__ == "__main__":
    run_main(main, "evaluate")
