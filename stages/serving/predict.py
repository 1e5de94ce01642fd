"""Predictions from an exported fitline ONNX model, with ONNX Runtime alone.

This module must never import torch (directly or through another stages.* module): a
serving host needs only onnxruntime, numpy and pandas. tests/test_predict.py checks it.

Everything a prediction needs travels inside the .onnx file, as JSON under the metadata key
`fitline` (written by the export stage): the feature names, the target, the task, the original
class labels and, for a model trained on a table with a schema, the columns (name, kind,
vocabulary), how each is fed (`encoding`) and the graph's output names (`outputs`). Two graphs:

- numeric (no `columns` in the metadata): one input `features` (float32, [batch, n_features],
  raw values in `feature_names` order); no missing values.
- raw rows: one input per feature column, named as the column, [batch, 1]: strings for boolean
  and categorical columns (`stages.data.encoding.category_keys`), float32 for numeric (NaN:
  missing) and datetime (days since 1970-01-01 UTC) ones (`encoding.onnx_inputs`).

Both return `prediction` [batch] (regression) or `probabilities` [batch, K] and `label` [batch]
(int64 class index; classification); the raw-row graph renames an output that a column's name
already takes (`graph_output_names`).

Input rows are taken as they are in the user's file: any column order, extra columns, and (raw-row
models) missing values, empty strings, categories never seen in training, booleans and dates. A
value that is not a number in a numeric column is one DataError naming the column and the value.
Columns that are not features (an id, the target under whatever name) pass through unchanged,
before the prediction columns; the feature columns themselves are not repeated.

Prediction columns are `prediction`, or `label` plus `proba_<class>`. One whose name the input
already has (a target called `label`, a column called `prediction`) gets `_predicted` appended
(`label_predicted`), again until the name is free: nothing is refused or overwritten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import Column
from stages.core.errors import DataError, first_line
from stages.core.io import atomic_path
from stages.data.encoding import numeric_values, onnx_inputs
from stages.data.tables import read_table, table_format

log = logging.getLogger(__name__)

METADATA_KEY = "fitline"
INPUT_NAME = "features"
REGRESSION_OUTPUTS = ("prediction",)
CLASSIFICATION_OUTPUTS = ("probabilities", "label")
CATEGORY_KINDS = ("boolean", "categorical")  # fed to the raw-row graph as strings
CLASH_SUFFIX = "_predicted"
# rows per ONNX Runtime call: bounds the memory of the output buffers on big inputs
CHUNK_ROWS = 65536


def task_outputs(task: str) -> tuple[str, ...]:
    return REGRESSION_OUTPUTS if task == "regression" else CLASSIFICATION_OUTPUTS


def free_name(name: str, taken: set[Any]) -> str:
    """`name`, with CLASH_SUFFIX appended until no name in `taken` is the same; adds it to `taken`."""
    while name in taken:
        name += CLASH_SUFFIX
    taken.add(name)
    return name


def graph_output_names(task: str, column_names: Iterable[str]) -> dict[str, str]:
    """The raw-row graph's output name per role: the role itself unless a column (a graph input)
    has that name, since inputs and outputs share one namespace."""
    taken = set(column_names)
    return {role: free_name(role, taken) for role in task_outputs(task)}


def _show(inputs: list[tuple[str, str, Any]]) -> str:
    """Graph inputs as `name [N, width]`, with the type unless float."""
    return ", ".join(f"{n} [N, {w}]" + ("" if t == "tensor(float)" else f" {t}") for n, t, w in inputs)


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
        self._read_metadata(raw)
        if self.task == "classification" and not self.classes:
            raise DataError(f"{self.path}: classification model without class labels in its metadata")
        self._check_graph()

    def _read_metadata(self, raw: str) -> None:
        try:
            self.info: dict[str, Any] = json.loads(raw)
            self.task: str = self.info["task"]
            self.feature_names: list[str] = list(self.info["feature_names"])
            columns = self.info.get("columns")
            # the schema of a raw-row graph; None: the numeric graph (one `features` input)
            self.columns: list[Column] | None = None if columns is None else [Column.from_dict(c) for c in columns]
            # graph output name per role (prediction, probabilities, label)
            self.outputs: dict[str, str] = {r: r for r in task_outputs(self.task)}
            self.outputs.update(self.info.get("outputs") or {})
            if self.columns is not None and [c.name for c in self.columns] != self.feature_names:
                raise ValueError("the columns are not the features")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DataError(f"{self.path}: malformed {METADATA_KEY!r} metadata in the ONNX model") from None
        self.classes: list[Any] | None = self.info.get("classes")

    def _expected_inputs(self) -> list[tuple[str, str, Any]]:
        """(name, ORT type, width) of each input the metadata promises."""
        if self.columns is None:
            return [(INPUT_NAME, "tensor(float)", len(self.feature_names))]
        kinds = {c.name: "tensor(string)" if c.kind in CATEGORY_KINDS else "tensor(float)" for c in self.columns}
        return [(c.name, kinds[c.name], 1) for c in self.columns]

    def _check_graph(self) -> None:
        """The graph takes what its metadata says (metadata copied onto another model crashed
        the first prediction with ORT's traceback)."""
        inputs, outputs = self.session.get_inputs(), {o.name for o in self.session.get_outputs()}
        got = [(i.name, i.type, i.shape[-1] if i.shape else None) for i in inputs]
        want = self._expected_inputs()
        wanted = set(self.outputs.values())
        if got != want or not wanted <= outputs:
            raise DataError(
                f"{self.path}: the graph (inputs {_show(got)}; outputs {', '.join(sorted(outputs))}) does not "
                f"match its {METADATA_KEY!r} metadata (inputs {_show(want)}; outputs {', '.join(sorted(wanted))}); "
                "export the model with the export stage"
            )

    def feeds(self, df: pd.DataFrame, where: str = "input") -> dict[str, np.ndarray]:
        """The graph's inputs from a frame of raw rows; bad columns or values are a DataError."""
        missing = [c for c in self.feature_names if c not in df.columns]
        if missing:
            extra = [str(c) for c in df.columns if c not in set(self.feature_names)]
            also = f"; columns not in the model: {', '.join(extra)}" if extra else ""
            raise DataError(f"{where}: missing feature column(s) {', '.join(map(str, missing))}{also}")
        if self.columns is None:
            return {INPUT_NAME: feature_matrix(df, self.feature_names, where)}
        return onnx_inputs(df, self.columns, where)

    def run(self, inputs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by role (prediction | probabilities, label), computed in chunks of rows.
        `inputs`: the graph's feeds, or (numeric graph) the float32 features (N, n_features)."""
        if isinstance(inputs, np.ndarray):
            if self.columns is not None:
                raise DataError(f"{self.path}: the model takes one input per column, not a feature matrix")
            inputs = {INPUT_NAME: inputs}
        roles = list(self.outputs)
        n = len(next(iter(inputs.values())))
        if n == 0:  # ORT mis-shapes some outputs of a zero-row batch; nothing to compute
            k = len(self.classes or ())
            empty = {"prediction": np.zeros(0, np.float32), "probabilities": np.zeros((0, k), np.float32),
                     "label": np.zeros(0, np.int64)}
            return {r: empty[r] for r in roles}
        names = [self.outputs[r] for r in roles]
        parts = [self.session.run(names, {k: v[i : i + CHUNK_ROWS] for k, v in inputs.items()})
                 for i in range(0, n, CHUNK_ROWS)]
        return {r: np.concatenate([p[j] for p in parts]) for j, r in enumerate(roles)}


def feature_matrix(df: pd.DataFrame, feature_names: list[str], where: str = "input") -> np.ndarray:
    """The numeric graph's features from `df`, float32 in the model's order. That graph has no
    imputation: a missing value is a DataError, as is a value that is not a number."""
    x = np.empty((len(df), len(feature_names)), np.float32)
    for j, c in enumerate(feature_names):
        x[:, j] = numeric_values(df[c], c, where)
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


def name_predictions(preds: pd.DataFrame, input_columns: Iterable[Any]) -> pd.DataFrame:
    """`preds` with each column whose name an input column has suffixed (free_name)."""
    taken = set(input_columns)
    names = [free_name(str(c), taken) for c in preds.columns]
    renamed = [f"{old} -> {new}" for old, new in zip(preds.columns, names, strict=True) if old != new]
    if renamed:
        log.warning("the input already has column(s) named like predictions: %s", ", ".join(renamed))
    return preds.set_axis(names, axis=1)


def predict_frame(model: str | Path | OnnxModel, df: pd.DataFrame, where: str = "input") -> pd.DataFrame:
    """Non-feature columns of `df` (passed through) followed by the prediction columns."""
    model = model if isinstance(model, OnnxModel) else OnnxModel(model)
    preds = name_predictions(predictions_frame(model, model.run(model.feeds(df, where))), df.columns)
    passed = [c for c in df.columns if c not in set(model.feature_names)]
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
