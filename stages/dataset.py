"""Reading what the `generate` stage wrote: data/meta.json and the three parquet splits.

Stages downstream of `generate` load data only through here, so the file layout and its
error messages live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.artifacts import read_json
from stages.errors import DataError

DATA_DIR = Path("data")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split as arrays: float32 features (rows x features) and the target (float32 or int64)."""

    x: np.ndarray
    y: np.ndarray


def load_meta(data_dir: str | Path = DATA_DIR) -> dict[str, Any]:
    meta = read_json(Path(data_dir) / "meta.json")
    for key in ("task", "feature_names", "target"):
        if key not in meta:
            raise DataError(f"{Path(data_dir) / 'meta.json'}: missing key {key!r} (re-run the generate stage)")
    return meta


def read_split_frame(name: str, data_dir: str | Path = DATA_DIR) -> pd.DataFrame:
    path = Path(data_dir) / f"{name}.parquet"
    if not path.exists():
        raise DataError(f"{path}: file not found (run the generate stage first)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet: {str(exc).splitlines()[0]}") from None


def frame_to_split(df: pd.DataFrame, meta: dict[str, Any], where: str = "data") -> Split:
    """Columns in meta's order, as arrays; a missing column is a DataError naming it."""
    cols = list(meta["feature_names"])
    missing = [c for c in [*cols, meta["target"]] if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
    x = df[cols].to_numpy(np.float32)
    y_dtype = np.int64 if meta["task"] == "classification" else np.float32
    return Split(x=x, y=df[meta["target"]].to_numpy(y_dtype))


def load_splits(data_dir: str | Path = DATA_DIR, meta: dict[str, Any] | None = None) -> dict[str, Split]:
    """All three splits as arrays, in meta.json's column order."""
    meta = meta if meta is not None else load_meta(data_dir)
    return {
        name: frame_to_split(read_split_frame(name, data_dir), meta, str(Path(data_dir) / f"{name}.parquet"))
        for name in SPLITS
    }
