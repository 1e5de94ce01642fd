"""`fitline monitor --input FILE`: does a new batch still look like what the model was trained on?

Checks, each problem one line naming its column:
- schema: every feature column of the model is there, numeric columns hold numbers;
- missing values: a column's missing share at most `monitor.missing_rate_tol` above train's;
- range: at most `monitor.outlier_tol` of a numeric column's values outside train's range, and
  none infinite;
- drift per column against the train split (stages/serving/drift.py), and of the model's
  predictions against its predictions on the test split.

Exit codes: 0 no problem, 1 drift or invalid data, 2 cannot judge (no model or reference data,
or fewer than `monitor.min_rows` rows).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import DATA_DIR, MONITOR_REPORT_PATH, ONNX_PATH, PARAMS_PATH, Column, Meta, load_meta
from stages.core.errors import DataError, FitlineError
from stages.core.io import jsonable, write_json
from stages.core.params import MonitorParams
from stages.data.encoding import category_keys, column_values
from stages.data.splits import read_split_frame
from stages.data.tables import read_table
from stages.serving.drift import Shift, categorical_shift, numeric_shift
from stages.serving.predict import OnnxModel, predict_frame

log = logging.getLogger(__name__)


class CannotJudge(FitlineError):
    """Monitoring has nothing to compare with (exit 2)."""

    exit_code = 2


class DriftFound(FitlineError):
    """The batch drifted or is invalid (exit 1); the message lists the problems."""


def column_problems(col: Column, ref: pd.Series, new: pd.Series, p: MonitorParams) -> list[str]:
    """Missing share and (numeric) range of one column; a wrong type is a DataError."""
    problems = []
    ref_missing = float(pd.Series(column_values(ref, col)).isna().mean()) if col.kind in ("numeric", "datetime") \
        else float((category_keys(ref) == "").mean())
    values = column_values(new, col, where=f"column {col.name!r}")
    new_missing = float(np.isnan(values).mean()) if col.kind in ("numeric", "datetime") \
        else float((category_keys(new) == "").mean())
    if new_missing > ref_missing + p.missing_rate_tol:
        problems.append(f"{col.name}: {new_missing:.1%} missing vs {ref_missing:.1%} in train "
                        f"(allowed +{p.missing_rate_tol:.0%}, monitor.missing_rate_tol)")
    if col.kind == "numeric":
        train_values = column_values(ref, col)
        lo, hi = np.nanmin(train_values), np.nanmax(train_values)
        if np.isinf(values).any():
            problems.append(f"{col.name}: {int(np.isinf(values).sum())} infinite value(s)")
        finite = values[np.isfinite(values)]
        outside = float(((finite < lo) | (finite > hi)).mean()) if len(finite) else 0.0
        if outside > p.outlier_tol:
            problems.append(f"{col.name}: {outside:.1%} of values outside train's range [{lo:.4g}, {hi:.4g}] "
                            f"(allowed {p.outlier_tol:.1%}, monitor.outlier_tol)")
    return problems


def column_shift(col: Column, ref: pd.Series, new: pd.Series, p: MonitorParams) -> Shift:
    if col.kind in ("boolean", "categorical"):
        keys_ref, keys_new = category_keys(ref), category_keys(new)
        return categorical_shift(col.name, keys_ref[keys_ref != ""], keys_new[keys_new != ""], p.p_value, p.psi)
    return numeric_shift(col.name, column_values(ref, col), column_values(new, col), p.p_value, p.psi)


def prediction_shift(model: OnnxModel, reference: pd.DataFrame, batch: pd.DataFrame, p: MonitorParams) -> Shift:
    """The model's main output on the batch against the same on the test split."""
    ref, new = (predict_frame(model, df[model.feature_names]) for df in (reference, batch))
    if model.task == "regression":
        return numeric_shift("predictions", ref.iloc[:, 0].to_numpy(float), new.iloc[:, 0].to_numpy(float),
                             p.p_value, p.psi)
    return categorical_shift("predicted labels", ref.iloc[:, 0].astype(str).to_numpy(),
                             new.iloc[:, 0].astype(str).to_numpy(), p.p_value, p.psi)


def monitor_batch(batch: pd.DataFrame, meta: Meta, train: pd.DataFrame, test: pd.DataFrame,
                  model: OnnxModel | None, p: MonitorParams) -> dict[str, Any]:
    """The report: problems (one line each), per-column shifts, the predictions' shift."""
    if len(batch) < p.min_rows:
        raise CannotJudge(f"the batch has {len(batch)} rows; at least {p.min_rows} are needed to judge drift "
                          "(monitor.min_rows)")
    missing = [c.name for c in meta.schema if c.name not in batch.columns]
    problems = [f"{name}: column missing from the batch" for name in missing]
    shifts = {}
    for col in (c for c in meta.schema if c.name not in missing):
        try:
            problems += column_problems(col, train[col.name], batch[col.name], p)
        except DataError as exc:
            problems.append(str(exc))
            continue
        shifts[col.name] = column_shift(col, train[col.name], batch[col.name], p)
    problems += [s.line() for s in shifts.values() if s.drifted]
    predictions = None
    if model is not None and not missing:
        predictions = prediction_shift(model, test, batch, p)
        if predictions.drifted:
            problems.append(predictions.line())
    return {"rows": len(batch), "success": not problems, "problems": problems,
            "columns": {k: vars(v) for k, v in shifts.items()},
            "predictions": vars(predictions) if predictions else None}


def load_reference(data_dir: Path = DATA_DIR) -> tuple[Meta, pd.DataFrame, pd.DataFrame]:
    try:
        meta = load_meta(data_dir)
        return meta, read_split_frame("train", data_dir), read_split_frame("test", data_dir)
    except DataError as exc:
        raise CannotJudge(f"no reference data to compare with: {exc}") from None


def load_model(path: Path = ONNX_PATH) -> OnnxModel:
    try:
        return OnnxModel(path)
    except DataError as exc:
        raise CannotJudge(f"no model to compare predictions with: {exc}") from None


def run_monitor(input_path: str | Path, report_path: str | Path = MONITOR_REPORT_PATH, root: str | Path = ".",
                params: MonitorParams | None = None) -> dict[str, Any]:
    """Check one batch file; write the JSON report; raise DriftFound (exit 1) listing the problems."""
    root = Path(root)
    if params is None:
        from stages.core.params import load_params

        params = load_params(root / PARAMS_PATH).monitor
    batch = read_table(input_path, "monitor input")
    meta, train, test = load_reference(root / DATA_DIR)
    report = {"input": str(input_path), **monitor_batch(batch, meta, train, test, load_model(root / ONNX_PATH), params)}
    write_json(report_path, jsonable(report))
    if not report["success"]:
        raise DriftFound(f"{input_path}: {len(report['problems'])} problem(s); report {report_path}\n  "
                         + "\n  ".join(report["problems"]))
    log.info("%s: %d rows, no drift (%d columns and the predictions checked); report %s",
             input_path, report["rows"], len(report["columns"]), report_path)
    return report
