"""Stage `evaluate`: metrics on every split, a constant baseline, the noise floor, and the fit
diagnosis (good / overfit / underfit) with its reasons and remedies.

`evaluate_model` is the in-process entry (a sweep calls it per trial): it returns the content
of metrics/eval.json and writes nothing. `main()` adds the files for people and for DVC plots:
reports/predictions.csv and reports/confusion.csv (a seeded sample of test rows),
reports/learning_curves.png, reports/predictions.png and reports/fit.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.contracts import (
    CONFUSION_CSV,
    EVAL_METRICS_PATH,
    FIT_REPORT_PATH,
    HISTORY_PATH,
    LEARNING_CURVES_PNG,
    MODEL_PATH,
    PREDICTIONS_CSV,
    PREDICTIONS_PNG,
    REPORTS_DIR,
    TRAIN_METRICS_PATH,
    Meta,
    check_model_fits,
    load_meta,
    read_history,
)
from stages.core.errors import run_main
from stages.core.io import read_json, write_json, write_text
from stages.core.params import LOSS_LABEL, EvaluateParams, load_params
from stages.data.splits import Split, load_splits
from stages.evaluation.report import class_labels, fit_report, plot_tables, sample_rows
from stages.evaluation.scoring import Evaluation, evaluate_splits

if TYPE_CHECKING:  # torch is imported where a model is run: the stage's error paths stay light
    pass

log = logging.getLogger(__name__)


def write_outputs(ev: Evaluation, splits: dict[str, Split], meta: Meta, history: list[dict[str, Any]],
                  params: EvaluateParams, reports_dir: Path = REPORTS_DIR, eval_path: Path = EVAL_METRICS_PATH) -> None:
    from stages.evaluation import plots

    report, task = ev.report, meta.task
    split = "test" if "test" in ev.outputs else "val"
    y, out = splits[split].y, ev.outputs[split]
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


def main() -> None:
    from stages.training.models import load_model

    params = load_params()
    meta = load_meta()
    splits = load_splits(meta=meta)
    model, cfg = load_model(MODEL_PATH)
    check_model_fits(cfg, meta)
    history = read_history(HISTORY_PATH)
    train_metrics = read_json(TRAIN_METRICS_PATH) if TRAIN_METRICS_PATH.exists() else {}
    ev = evaluate_splits(params.evaluate, model, splits, meta, history, restored_best=train_metrics.get("restored_best"))
    write_outputs(ev, splits, meta, history, params.evaluate)
    fit = ev.report["fit"]
    log.info("verdict: %s", fit["verdict"])
    for reason in fit["reasons"]:
        log.info("  %s", reason)
    for remedy in fit["remedies"]:
        log.info("  remedy: %s", remedy)


if __name__ == "__main__":
    run_main(main, "evaluate")
