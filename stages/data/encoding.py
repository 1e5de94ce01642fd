"""Raw column values as the model takes them: one rule per column kind, shared by training (the
encoded matrix torch sees) and serving (the ONNX graph's per-column inputs).

The model's input, one column per feature in the schema's order:
- numeric: the value as float32, NaN where missing (the model imputes);
- boolean, categorical: the category's index: UNKNOWN (not in the vocabulary: unseen in train,
  or pooled as rare), MISSING (no value: NaN, None, ""), else 2 + its place in the vocabulary;
- datetime: days since 1970-01-01 UTC as float32, NaN where missing or unparseable.

The exported ONNX graph takes the categorical columns as strings (`category_keys`) and maps them
to the same indices with an ONNX-ML LabelEncoder, so the same keys give the same model input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import Column
from stages.core.errors import DataError

UNKNOWN, MISSING = 0, 1  # category indices; the vocabulary starts at 2
MISSING_KEY = ""  # the string key a missing category becomes
DAY_NS = 86_400 * 10**9


def _key(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return MISSING_KEY
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # 3 and 3.0 (an integer column with NaN reads as float) are one category
    return str(value)


def category_keys(values: pd.Series) -> np.ndarray:
    """Each value as the string the vocabulary holds ("" for a missing one), as an object array.

    Vectorised for the dtypes files give (text, booleans, integers, floats), value by value
    (`_key`) for mixed object columns; both give the same keys."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype):
        return values.fillna(MISSING_KEY).to_numpy(dtype=object)
    if pd.api.types.is_bool_dtype(dtype):
        missing = values.isna().to_numpy()
        out = np.where(values.fillna(False).to_numpy(dtype=bool), "True", "False").astype(object)
        out[missing] = MISSING_KEY
        return out
    if pd.api.types.is_integer_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return values.to_numpy().astype(str).astype(object)
    if pd.api.types.is_float_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        arr = values.to_numpy(dtype=np.float64)
        out = np.full(len(arr), MISSING_KEY, dtype=object)
        finite = np.isfinite(arr)
        integral = finite & (arr == np.floor(arr))
        small = integral & (np.abs(arr) < 2.0**62)  # int64 holds them; huge ones go through Python's int
        out[small] = arr[small].astype(np.int64).astype(str)
        out[integral & ~small] = [str(int(v)) for v in arr[integral & ~small]]
        other = ~np.isnan(arr) & ~integral
        out[other] = [str(float(v)) for v in arr[other]]
        return out
    return np.array([_key(v) for v in values.tolist()], dtype=object)


def category_index(keys: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Category keys as float32 indices (UNKNOWN, MISSING, 2 + the vocabulary's place)."""
    lookup = {k: i + 2 for i, k in enumerate(vocabulary)}
    lookup[MISSING_KEY] = MISSING
    return pd.Series(keys, dtype=object).map(lookup).fillna(UNKNOWN).to_numpy(dtype=np.float32)


def numeric_values(values: pd.Series, name: str, where: str = "input") -> np.ndarray:
    """float32 with NaN for missing; a value that is not a number is a DataError naming it."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64").to_numpy(np.float32, na_value=np.nan)
    blank = values.isna() | values.astype(str).str.strip().eq("")
    numbers = pd.to_numeric(values.where(~blank), errors="coerce")
    bad = values[numbers.isna() & ~blank]
    if len(bad):
        raise DataError(f"{where}: column {name!r} is numeric but has {len(bad)} non-numeric value(s), "
                        f"e.g. {str(bad.iloc[0])!r}")
    return numbers.to_numpy(np.float32, na_value=np.nan)


def datetime_days(values: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 UTC as float32; NaN where missing or not a date."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64").to_numpy(np.float32, na_value=np.nan)  # already days
    stamps = pd.to_datetime(values, errors="coerce", utc=True, format="mixed").dt.tz_convert(None)
    # measured in days, not in raw ticks: pandas 3 parses text to microseconds and keeps a column's
    # own unit (s, ms, us, ns), so dividing the int64 ticks by DAY_NS was off by 1000x and more
    days = (stamps.to_numpy() - np.datetime64(0, "D")) / np.timedelta64(1, "D")
    return days.astype(np.float32)


def column_values(values: pd.Series, column: Column, where: str = "input") -> np.ndarray:
    """One raw column as the model's input column (see the module docstring)."""
    if column.kind in ("boolean", "categorical"):
        return category_index(category_keys(values), column.vocabulary or [])
    if column.kind == "datetime":
        return datetime_days(values)
    return numeric_values(values, column.name, where)


def encode_frame(df: pd.DataFrame, columns: list[Column], where: str = "input") -> np.ndarray:
    """The model's input matrix (rows x columns, float32) from a frame with the raw columns."""
    missing = [c.name for c in columns if c.name not in df.columns]
    if missing:
        raise DataError(f"{where}: missing feature column(s) {', '.join(missing)}")
    if not columns:
        return np.empty((len(df), 0), np.float32)
    return np.stack([column_values(df[c.name], c, where) for c in columns], axis=1)


def onnx_inputs(df: pd.DataFrame, columns: list[Column], where: str = "input") -> dict[str, np.ndarray]:
    """The exported graph's inputs, one [N, 1] array per feature column: category keys as strings,
    everything else as float32 (datetime as days since 1970)."""
    missing = [c.name for c in columns if c.name not in df.columns]
    if missing:
        raise DataError(f"{where}: missing feature column(s) {', '.join(missing)}")
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c.kind in ("boolean", "categorical"):
            out[c.name] = category_keys(df[c.name]).reshape(-1, 1)
        else:
            out[c.name] = column_values(df[c.name], c, where).reshape(-1, 1)
    return out
