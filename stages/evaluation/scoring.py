"""Metrics on every split, a constant baseline, the noise floor and the fit diagnosis.

`evaluate_model` is the in-process entry (a sweep calls it per trial): it returns the content of
metrics/eval.json and writes nothing.
"""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.contracts import SPLITS, Meta
from stages.core.errors import DataError
from stages.core.params import EvaluateParams
from stages.evaluation.diagnosis import fit_diagnosis
from stages.evaluation.metrics import baseline_metrics, bootstrap_ci, compute_metrics

if TYPE_CHECKING:  # torch is imported where a model is run: the stage scores saved outputs
    from torch import nn

    from stages.data.splits import Split


@dataclass
class Evaluation:
    report: dict[str, Any]  # the content of metrics/eval.json
    outputs: dict[str, np.ndarray]  # per split: predictions (N,) or logits (N, K)


log = logging.getLogger(__name__)

SMALL_SPLIT = 100  # rows: below this a split's metrics move by whole points with one row


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Model outputs for raw features as float64 numpy (stages.training.models.predict, imported
    here when a model is run: scoring saved outputs needs no torch)."""
    from stages.training.models import predict as model_predict

    return model_predict(model, x)


def score_outputs(params: EvaluateParams, outputs: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                  meta: Meta, history: list[dict[str, Any]], *,
                  restored_best: bool | None = None) -> dict[str, Any]:
    """eval.json from model outputs and targets per split: metrics, baseline, noise floor and
    the fit (the stage scores the outputs train saved; a sweep trial those of its model)."""
    task = meta.task
    n_classes = len(meta.classes) if task == "classification" else None
    for name in ("train", "val"):
        if name not in outputs:
            raise DataError(f"evaluate: split {name!r} is needed for the fit diagnosis")
    names = [s for s in SPLITS if s in outputs]
    report: dict[str, Any] = {"task": task}
    for name in names:
        out = outputs[name]
        if not np.isfinite(out).all():
            raise DataError(f"evaluate: the model gives non-finite outputs on the {name} split")
        if len(out) != len(targets[name]):
            raise DataError(f"evaluate: {len(out)} model outputs for the {len(targets[name])} rows of the {name} "
                            "split (run `dvc repro train`)")
        report[name] = {**compute_metrics(task, targets[name], out, n_classes), "n": len(out)}
        if len(out) < SMALL_SPLIT:
            log.warning("the %s split has %d rows: one row moves its metrics by %.1f points; give it more "
                        "rows (data.split), or judge on k-fold cross-validation (evaluate.cv_folds: 5)",
                        name, len(out), 100 / max(len(out), 1))
    held_out = "test" if "test" in names else "val"
    # intervals next to the held-out metrics (seeded: the same run gives the same bytes)
    report[held_out]["ci"] = bootstrap_ci(task, targets[held_out], outputs[held_out])
    y_train = targets["train"]
    report["baseline"] = {name: baseline_metrics(task, y_train, targets[name], n_classes) for name in names}
    truth = meta.ground_truth
    report["irreducible"] = truth.get("irreducible") if truth else None
    report["fit"] = fit_diagnosis(params, report, history, meta, restored_best=restored_best)
    return report


def evaluate_splits(params: EvaluateParams, model: nn.Module, splits: dict[str, Split], meta: Meta,
        history: list[dict[str, Any]], *, restored_best: bool | None = None) -> Evaluation:
    outputs = {name: predict(model, split.x) for name, split in splits.items()}
    targets = {name: split.y for name, split in splits.items()}
    report = score_outputs(params, outputs, targets, meta, history, restored_best=restored_best)
    return Evaluation(report=report, outputs=outputs)


def evaluate_model(params: EvaluateParams, model: nn.Module, splits: dict[str, Split], meta: Meta,
                   history: list[dict[str, Any]], *, restored_best: bool | None = None) -> dict[str, Any]:
    """The whole content of metrics/eval.json for an in-memory model; writes nothing.

    `history` is TrainResult.history (per-epoch train/val loss); `restored_best` is
    TrainResult.metrics["restored_best"] when known (else inferred from the curve).
    """
    return evaluate_splits(params, model, splits, meta, history, restored_best=restored_best).report
