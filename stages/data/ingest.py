"""A user's CSV or Parquet file as pipeline data: read it, drop the rows without a target, infer
the task and encode the labels, type the feature columns (stages/data/columns.py) and write the
raw splits with the schema meta.json records.

The file lives in data/raw/ (a DVC dependency of generate, so an edited file re-runs the
pipeline); meta.json records its SHA-256. Duplicate rows and outliers are the data's own: they
are kept here, and validate reports them.
"""


from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import RAW_DIR
from stages.core.errors import DataError
from stages.core.io import file_digest
from stages.core.params import DataParams
from stages.data.columns import TrainStats, describe_dropped, stored_values, type_columns
from stages.data.splits import assign_splits, frame_schema, write_frame_rows
from stages.data.tables import read_table

log = logging.getLogger(__name__)


# an integer target with at most this many distinct values is taken as class labels (task auto)
MAX_AUTO_CLASSES = 20


def warn_if_untracked(path: Path, raw_dir: Path = RAW_DIR) -> bool:
    """Warn (and return True) when the user file lies outside data/raw: DVC does not see it, so
    editing it would leave `dvc repro` reporting the data up to date."""
    if path.resolve().is_relative_to(raw_dir.resolve()):
        return False
    log.warning("data.path %s is outside %s/, which is not a DVC dependency: `dvc repro` will not "
                "re-run generate when the file changes. Move it into %s/ (see its README).", path, raw_dir, raw_dir)
    return True


def _read_user_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist")
    return read_table(path, "data.path")


def infer_task(target: pd.Series) -> str:
    """Classification for string/bool/categorical labels or few distinct integers; else regression."""
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna()
    integral = pd.api.types.is_integer_dtype(target) or bool(np.all(np.mod(values, 1) == 0))
    if integral and values.nunique() <= MAX_AUTO_CLASSES:
        return "classification"
    return "regression"


def _json_label(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def drop_missing_target(df: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """The rows that have a target (NaN, None and blank text have none), and how many had not.
    A row without a target can be neither trained on nor scored, but its features are still data:
    dropping them is a note in the log and meta.json, not an error."""
    values = df[target]
    missing = values.isna()
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        missing |= values.astype(str).str.strip().eq("")
    n = int(missing.sum())
    if n:
        log.warning("data.target: dropped %d of %d row(s) without a value in %r", n, len(df), target)
    return df.loc[~missing], n


def encode_target(target: pd.Series, p: DataParams) -> tuple[str, list[Any] | None, np.ndarray]:
    """(task, class labels in index order or None, y: class index int64 or float32 values)."""
    task = infer_task(target) if p.task == "auto" else p.task
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
            raise DataError(f"data.task: regression needs a numeric target; {p.target!r} is {target.dtype}")
        return task, None, target.to_numpy(np.float32)
    if pd.api.types.is_float_dtype(target) and bool(np.all(np.mod(target, 1) == 0)):
        target = target.astype(np.int64)  # integer labels read as float because of gaps: classes 0, 1, not 0.0, 1.0
    classes = sorted(target.unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        # a one-class "classifier" reaches zero loss and a perfect score: it must not pass a gate
        raise DataError(f"data.target: column {p.target!r} has one class ({classes[0]!r}) in {len(target)} rows; "
                        "a classifier needs at least two (for a numeric target set data.task: regression)")
    y = target.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return task, [_json_label(c) for c in classes], y


def _check_table(df: pd.DataFrame, p: DataParams) -> None:
    if p.target not in df.columns:
        raise DataError(f"data.target: column {p.target!r} not in {p.path} (columns: {', '.join(map(str, df.columns))})")
    if len(df.columns) < 2:
        raise DataError(f"{p.path}: no feature columns besides the target {p.target!r}")


def _typed_features(df: pd.DataFrame, p: DataParams) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str]]:
    """The kept features in the form the splits store, their kinds, and the left-out columns."""
    kinds, dropped = type_columns(df.drop(columns=p.target), dict(p.columns), str(p.path))
    if dropped:
        log.warning("data: left out column(s) %s", describe_dropped(dropped))
    if not kinds:
        raise DataError(f"{p.path}: no usable feature columns (left out: {describe_dropped(dropped)}); "
                        "declare one in data.columns")
    frame = pd.DataFrame({name: stored_values(df[name], kind, name) for name, kind in kinds.items()},
                         index=df.index)
    return frame, kinds, dropped


def from_file(p: DataParams, writers_factory: Any) -> dict[str, Any]:
    """Ingest data.path: write the raw splits; return what meta.json records about them."""
    path = Path(p.path)
    df = _read_user_file(path)
    warn_if_untracked(path)
    _check_table(df, p)
    df, target_missing = drop_missing_target(df, p.target)
    if len(df) < 3:
        raise DataError(f"{p.path}: {len(df)} rows with a target; need at least 3 to split into train/val/test")
    task, classes, y = encode_target(df[p.target], p)
    frame, kinds, dropped = _typed_features(df, p)
    rng = np.random.default_rng([p.seed, 1])
    split_of = assign_splits(len(df), p.split, rng, y if task == "classification" else None)
    stats = TrainStats(kinds)
    stats.add(frame.loc[split_of == 0])
    writers = writers_factory(list(kinds), p.target, task, frame_schema(frame, p.target, task))
    write_frame_rows(writers, frame, y, split_of, p.target)
    return {"names": list(kinds), "target": p.target, "task": task, "classes": classes, "ground_truth": None,
            "split_of": split_of, "labels": y if task == "classification" else None,
            "source_sha256": file_digest(path), "columns": stats.columns(p.min_category_count),
            "dropped": dropped, "target_missing": target_missing}
