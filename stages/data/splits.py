"""The train/val/test splits: seeded assignment, the parquet writers of `generate`, and the
readers every later stage loads data through (so the file layout and its error messages live in
one place).

Two layouts, told apart by meta.json's `columns`:
- numeric (synthetic linear, friedman, classification; `columns` null): float32 feature columns,
  read straight into a float32 matrix;
- raw (user files and the mixed kind; `columns` set): the features as the table had them
  (numbers, strings, booleans, UTC timestamps, gaps kept), read into the model's input matrix by
  stages.data.encoding.encode_frame.
Both hold the target encoded: the class index as int64, or a float32 value.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stages.core.contracts import DATA_DIR, SPLITS, Meta, load_meta, split_path
from stages.core.errors import DataError, first_line
from stages.core.io import atomic_path
from stages.data.encoding import encode_frame


def _split_counts(n: int, split: Any) -> tuple[int, int, int]:
    n_train = round(n * split.train)
    n_val = round(n * split.val)
    return n_train, n_val, n - n_train - n_val


def assign_splits(n: int, split: Any, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
    """Split id per row (0 train, 1 val, 2 test): seeded, disjoint, stratified when labels given."""
    split_of = np.empty(n, dtype=np.int8)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for idx in groups:
        ids = np.repeat(np.array([0, 1, 2], dtype=np.int8), _split_counts(len(idx), split))
        split_of[idx] = ids[rng.permutation(len(idx))]
    return split_of


def _target_dtype(task: str) -> type[np.generic]:
    return np.int64 if task == "classification" else np.float32


def _schema(names: list[str], target: str, task: str) -> pa.Schema:
    y_type = pa.int64() if task == "classification" else pa.float32()
    return pa.schema([pa.field(n, pa.float32()) for n in names] + [pa.field(target, y_type)])


def frame_schema(frame: pd.DataFrame, target: str, task: str) -> pa.Schema:
    """The raw layout's schema: the features' own Arrow types (with pandas' metadata, so strings,
    nullable booleans and timestamps read back as they were written) and the encoded target."""
    y_type = pa.int64() if task == "classification" else pa.float32()
    return pa.Schema.from_pandas(frame, preserve_index=False).append(pa.field(target, y_type))


def write_rows(writers: dict[str, pq.ParquetWriter], names: list[str], x: np.ndarray,
                y: np.ndarray, split_of: np.ndarray, target: str = "y") -> None:
    for sid, split in enumerate(SPLITS):
        mask = split_of == sid
        cols = {n: x[mask, j] for j, n in enumerate(names)}
        cols[target] = y[mask]
        writers[split].write_table(pa.table(cols, schema=writers[split].schema))


def write_frame_rows(writers: dict[str, pq.ParquetWriter], frame: pd.DataFrame, y: np.ndarray,
                     split_of: np.ndarray, target: str) -> None:
    """The raw layout's rows: each split's rows of `frame` (in their order) plus the target."""
    for sid, split in enumerate(SPLITS):
        mask = split_of == sid
        part = frame.loc[mask].assign(**{target: y[mask]})
        writers[split].write_table(pa.Table.from_pandas(part, schema=writers[split].schema, preserve_index=False))


@contextlib.contextmanager
def split_writers(out_dir: Path) -> Iterator[Any]:
    """Open one ParquetWriter per split on temporary paths; rename all into place only on success."""
    with contextlib.ExitStack() as stack:
        tmps = {s: stack.enter_context(atomic_path(split_path(s, out_dir))) for s in SPLITS}
        writers: dict[str, pq.ParquetWriter] = {}

        def factory(names: list[str], target: str, task: str,
                    schema: pa.Schema | None = None) -> dict[str, pq.ParquetWriter]:
            """Writers of the numeric layout, or of `schema` (frame_schema) for the raw one."""
            schema = schema if schema is not None else _schema(names, target, task)
            for s in SPLITS:
                writers[s] = pq.ParquetWriter(tmps[s], schema, compression="snappy")
            return writers

        try:
            yield factory
        finally:
            for w in writers.values():
                w.close()


@dataclass(frozen=True)
class Split:
    """One split as arrays: the model's float32 input (rows x features; encoding.encode_frame of
    the raw columns in the raw layout) and the target (float32 or int64)."""

    x: np.ndarray
    y: np.ndarray


def read_split_frame(name: str, data_dir: str | Path = DATA_DIR, columns: list[str] | None = None) -> pd.DataFrame:
    """One split as a DataFrame with the file's own columns and dtypes (what pd.read_parquet
    gives: validate checks whatever is there), read one column at a time; `columns`: only these,
    in this order (a missing one is a DataError naming it).

    pd.read_parquet of the whole file holds the Arrow table and the frame at once, and Arrow's
    allocator keeps what it frees (README, Scale); this way the frame plus one column, and the
    freed Arrow memory goes back to the system."""
    path = split_path(name, data_dir)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the generate stage first)")
    try:
        schema = pq.read_schema(path)
        index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
        names = [n for n in schema.names if n not in index]
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            names = list(columns)
        if not names:
            return pd.read_parquet(path, columns=columns)
        # one open file: pd.read_parquet per column re-parsed the whole footer each time, which
        # grew with the square of the column count (about an hour at 10,000 columns)
        file = pq.ParquetFile(path)
        frame = pd.concat([file.read(columns=[n], use_pandas_metadata=True).to_pandas() for n in names], axis=1)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet: {first_line(exc)}") from None
    finally:
        pa.default_memory_pool().release_unused()
    return frame


def read_split_features(name: str, meta: Meta, data_dir: str | Path = DATA_DIR) -> pd.DataFrame:
    """One split's feature columns as the table had them, in meta's order: what the exported
    graph and `fitline predict` take (encoding.onnx_inputs), and what validate checks."""
    return read_split_frame(name, data_dir, columns=list(meta.feature_names))


def frame_to_split(df: pd.DataFrame, meta: Meta, where: str = "data") -> Split:
    """Columns in meta's order, as arrays (the raw layout through encoding.encode_frame); a
    missing column, or a class label missing, is a DataError naming it."""
    cols = list(meta.feature_names)
    missing = [c for c in [*cols, meta.target] if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
    x = encode_frame(df, meta.columns, where) if meta.columns is not None else df[cols].to_numpy(np.float32)
    y = df[meta.target]
    if meta.task == "classification" and y.isna().any():
        raise DataError(f"{where}: {int(y.isna().sum())} missing class labels in column {meta.target!r}")
    return Split(x=x, y=y.to_numpy(_target_dtype(meta.task)))


def read_split(name: str, meta: Meta, data_dir: str | Path = DATA_DIR) -> Split:
    """One split as arrays: what frame_to_split(read_split_frame(...)) gives.

    The numeric layout is read one column of one row group at a time straight into the arrays:
    the DataFrame route holds the Arrow table, the DataFrame and the array at once, and Arrow's
    allocator keeps what it frees (README, Scale); this way the arrays plus one column chunk.
    The raw layout goes through a frame of the split's columns (its strings must be encoded)."""
    path = split_path(name, data_dir)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the generate stage first)")
    if meta.columns is not None:
        frame = read_split_frame(name, data_dir, columns=[*meta.feature_names, meta.target])
        return frame_to_split(frame, meta, str(path))
    cols, target = [*meta.feature_names], meta.target
    y_dtype = _target_dtype(meta.task)
    try:
        f = pq.ParquetFile(path)
        missing = [c for c in [*cols, target] if c not in f.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        n = f.metadata.num_rows
        x, y = np.empty((n, len(cols)), np.float32), np.empty(n, y_dtype)
        start = 0
        for group in range(f.metadata.num_row_groups):
            stop = start + f.metadata.row_group(group).num_rows
            for j, col in enumerate([*cols, target]):
                values = f.read_row_group(group, columns=[col]).column(0)
                if col != target:
                    x[start:stop, j] = values.to_numpy()
                elif values.null_count and y_dtype is np.int64:
                    raise DataError(f"{path}: {values.null_count} missing class labels in column {target!r}")
                else:
                    y[start:stop] = values.to_numpy()
            start = stop
    except pa.ArrowException as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet: {first_line(exc)}") from None
    except (ValueError, TypeError) as exc:  # a column that does not convert to numbers
        raise DataError(f"{path}: non-numeric values in a feature or target column ({first_line(exc)})") from None
    return Split(x=x, y=y)


def load_splits(data_dir: str | Path = DATA_DIR, meta: Meta | None = None,
                names: tuple[str, ...] = SPLITS) -> dict[str, Split]:
    """The splits `names` (default all three) as arrays, in meta.json's column order."""
    meta = meta if meta is not None else load_meta(data_dir)
    return {name: read_split(name, meta, data_dir) for name in names}
