"""A user's CSV or Parquet file as pipeline data: read it, infer the task, encode the labels.

The file lives in data/raw/ (a DVC dependency of generate, so an edited file re-runs the
pipeline); meta.json records its SHA-256.
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
from stages.data.splits import assign_splits, write_rows
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


def from_file(p: DataParams, writers_factory: Any) -> tuple[dict[str, Any], list[str]]:
    path = Path(p.path)
    df = _read_user_file(path)
    warn_if_untracked(path)
    if p.target not in df.columns:
        raise DataError(f"data.target: column {p.target!r} not in {p.path} (columns: {', '.join(map(str, df.columns))})")
    features = [c for c in df.columns if c != p.target]
    if not features:
        raise DataError(f"{p.path}: no feature columns besides the target {p.target!r}")
    bad = [str(c) for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"{p.path}: feature columns must be numeric; not numeric: {', '.join(bad)}")
    if len(df) < 3:
        raise DataError(f"{p.path}: {len(df)} rows; need at least 3 to split into train/val/test")
    target = df[p.target]
    task = infer_task(target) if p.task == "auto" else p.task
    classes = None
    if task == "classification":
        if target.isna().any():
            raise DataError(f"data.target: column {p.target!r} has {int(target.isna().sum())} missing labels")
        classes = sorted(target.unique().tolist(), key=lambda v: (str(type(v)), v))
        if len(classes) < 2:
            # a one-class "classifier" reaches zero loss and a perfect score: it must not pass a gate
            raise DataError(f"data.target: column {p.target!r} has one class ({classes[0]!r}) in {len(df)} rows; "
                            "a classifier needs at least two (for a numeric target set data.task: regression)")
        y = target.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
        classes = [_json_label(c) for c in classes]
    else:
        if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
            raise DataError(f"data.task: regression needs a numeric target; {p.target!r} is {target.dtype}")
        y = target.to_numpy(np.float32)
    rng = np.random.default_rng([p.seed, 1])
    split_of = assign_splits(len(df), p.split, rng, y if task == "classification" else None)
    names = [str(c) for c in features]
    writers = writers_factory(names, p.target, task)
    x = df[features].to_numpy(np.float32)
    write_rows(writers, names, x, y, split_of, target=p.target)
    return {"task": task, "classes": classes, "ground_truth": None, "split_of": split_of,
            "labels": y if task == "classification" else None, "source_sha256": file_digest(path)}, names
