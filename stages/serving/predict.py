"""Predictions from an exported fitline ONNX model, with ONNX Runtime alone.

This module must never import torch (directly or through another stages.* module): a
serving host needs only onnxruntime, numpy and pandas. tests/test_predict.py checks it.

Everything a prediction needs travels inside the .onnx file: the feature names, the target,
the task and the original class labels are stored as JSON under the metadata key
`fitline` (written by the export stage). The graph takes one input `features`
(float32, [batch, n_features], raw unscaled values in `feature_names` order) and returns
`prediction` [batch] (regression) or `probabilities` [batch, K] and `label` [batch] (int64
class index; classification).

Input columns: every feature column must be present and numeric with no missing values.
Columns that are not features (an id, the target) are passed through unchanged, before the
prediction columns, so predictions can be joined back; the feature columns themselves are
not repeated in the output.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.errors import DataError, first_line, run_main
from stages.core.io import atomic_path
from stages.data.tables import read_table, table_format

log = logging.getLogger(__name__)

METADATA_KEY = "fitline"
INPUT_NAME = "features"
REGRESSION_OUTPUTS = ("prediction",)
CLASSIFICATION_OUTPUTS = ("probabilities", "label")
# rows per ONNX Runtime call: bounds the memory of the output buffers on big inputs
CHUNK_ROWS = 65536


class OnnxModel:
    """An ONNX Runtime session plus the fitline metadata stored in the model file."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        """`threads`: ORT intra-op threads (None: ORT's default, one per core)."""
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: model file not found (run the export stage first)")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # ORT warns on every zero-row or odd-shape call otherwise
        # idle ORT threads otherwise busy-wait after each call, starving whatever else runs in
        # the process (torch, in the export stage's latency comparison) or on a shared host
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            first = first_line(exc)
            raise DataError(f"{self.path}: not a readable ONNX model ({first})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise DataError(f"{self.path}: ONNX model has no {METADATA_KEY!r} metadata (not exported by fitline)")
        try:
            self.info: dict[str, Any] = json.loads(raw)
            self.task: str = self.info["task"]
            self.feature_names: list[str] = list(self.info["feature_names"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{self.path}: malformed {METADATA_KEY!r} metadata in the ONNX model") from None
        self.classes: list[Any] | None = self.info.get("classes")
        if self.task == "classification" and not self.classes:
            raise DataError(f"{self.path}: classification model without class labels in its metadata")
        self._check_graph()

    def _check_graph(self) -> None:
        """The graph takes what its metadata says (metadata copied onto another model crashed
        the first prediction with ORT's traceback)."""
        inputs, outputs = self.session.get_inputs(), {o.name for o in self.session.get_outputs()}
        width = inputs[0].shape[-1] if len(inputs) == 1 and inputs[0].shape else None
        wanted = set(REGRESSION_OUTPUTS if self.task == "regression" else CLASSIFICATION_OUTPUTS)
        if (len(inputs) != 1 or inputs[0].name != INPUT_NAME or width != len(self.feature_names)
                or not wanted <= outputs):
            got = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise DataError(
                f"{self.path}: the graph (inputs {got}; outputs {', '.join(sorted(outputs))}) does not match its "
                f"{METADATA_KEY!r} metadata ({INPUT_NAME} [N, {len(self.feature_names)}]; outputs "
                f"{', '.join(sorted(wanted))}); export the model with the export stage"
            )

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw graph outputs by name for float32 features (N, n_features), computed in chunks."""
        names = [o.name for o in self.session.get_outputs()]
        if len(x) == 0:  # ORT mis-shapes some outputs of a zero-row batch; nothing to compute
            k = len(self.classes or ())
            empty = {"prediction": np.zeros(0, np.float32), "probabilities": np.zeros((0, k), np.float32),
                     "label": np.zeros(0, np.int64)}
            return {n: empty[n] for n in names}
        parts = [self.session.run(names, {INPUT_NAME: x[i : i + CHUNK_ROWS]}) for i in range(0, len(x), CHUNK_ROWS)]
        return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}


def feature_matrix(df: pd.DataFrame, feature_names: list[str], where: str = "input") -> np.ndarray:
    """The model's features from `df` as float32 in the model's order; bad columns are a DataError."""
    missing = [c for c in feature_names if c not in df.columns]
    if missing:
        extra = [str(c) for c in df.columns if c not in set(feature_names)]
        also = f"; columns not in the model: {', '.join(extra)}" if extra else ""
        raise DataError(f"{where}: missing feature column(s) {', '.join(missing)}{also}")
    non_numeric = [
        f"{c} ({df[c].dtype})" for c in feature_names if not pd.api.types.is_numeric_dtype(df[c].dtype)
    ]
    if non_numeric:
        raise DataError(f"{where}: non-numeric feature column(s) {', '.join(non_numeric)}")
    x = df[feature_names].to_numpy(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        counts = bad.sum(axis=0)
        cols = [f"{c} ({int(n)} rows)" for c, n in zip(feature_names, counts, strict=True) if n]
        raise DataError(f"{where}: missing or non-finite values in feature column(s) {', '.join(cols)}")
    return x


def predictions_frame(model: OnnxModel, outputs: dict[str, np.ndarray]) -> pd.DataFrame:
    """Prediction columns: `prediction`, or `label` (original labels) plus `proba_<label>`."""
    if model.task == "regression":
        return pd.DataFrame({"prediction": outputs["prediction"]})
    classes = model.classes or []
    labels = np.asarray(classes, dtype=object)[outputs["label"]]
    frame = {"label": pd.Series(labels).infer_objects()}
    for j, c in enumerate(classes):
        frame[f"proba_{c}"] = outputs["probabilities"][:, j]
    return pd.DataFrame(frame)


def predict_frame(model: str | Path | OnnxModel, df: pd.DataFrame, where: str = "input") -> pd.DataFrame:
    """Non-feature columns of `df` (passed through) followed by the prediction columns."""
    model = model if isinstance(model, OnnxModel) else OnnxModel(model)
    x = feature_matrix(df, model.feature_names, where)
    preds = predictions_frame(model, model.run(x))
    passed = [c for c in df.columns if c not in set(model.feature_names)]
    clash = [c for c in passed if c in preds.columns]
    if clash:
        raise DataError(f"{where}: column(s) {', '.join(map(str, clash))} would be overwritten by predictions")
    if passed:
        log.info("passing through non-feature column(s): %s", ", ".join(map(str, passed)))
    return pd.concat([df[passed].reset_index(drop=True), preds], axis=1)


def read_frame(path: str | Path) -> pd.DataFrame:
    return read_table(path, "input")


def write_frame(path: str | Path, df: pd.DataFrame) -> None:
    """The predictions, atomically; a folder that does not exist or cannot be written is one line."""
    path = Path(path)
    fmt = table_format(path, "output")
    try:
        with atomic_path(path) as tmp:
            if fmt == "csv":
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
    except OSError as exc:
        raise DataError(f"{path}: cannot write the predictions: {exc.strerror or first_line(exc)}") from None


def predict_file(model_path: str | Path, input_path: str | Path, output_path: str | Path) -> int:
    """Read rows, predict, write atomically; returns the number of rows predicted."""
    table_format(output_path, "output")  # fail before any work on a bad output name
    model = OnnxModel(model_path)
    df = read_frame(input_path)
    preds = predict_frame(model, df, where=str(input_path))
    write_frame(output_path, preds)
    log.info("%d rows -> %s (%s model %s)", len(preds), output_path, model.task, model.path)
    return len(preds)


def main(model: str, input: str, output: str) -> None:  # noqa: A002 - mirrors the CLI options
    run_main(lambda: predict_file(model, input, output), "predict")
