"""Users' tables as files: which suffixes are read, and reading one into a DataFrame with the
problems people's files have named in one line (generate's ingest and `fitline predict` both
read through here)."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from stages.core.contracts import TABLE_FORMATS
from stages.core.errors import DataError, first_line


def table_format(path: str | os.PathLike[str], role: str = "input") -> str:
    """csv or parquet, from the suffix; anything else is a DataError naming the file."""
    path = Path(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported {role} file type {path.suffix or '(none)'!r} (use .csv or .parquet)")
    return fmt


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        return next(csv.reader(f), [])


def _parquet_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    return [n for n in schema.names if n not in index]


def _duplicates(names: list[str]) -> list[str]:
    return [name for name, n in Counter(map(str, names)).items() if n > 1]


def read_table(path: str | os.PathLike[str], what: str = "input") -> pd.DataFrame:
    """The table at `path`. Refused with one line each: a missing or unreadable file, duplicate
    column names (pandas would silently rename the second `a` to `a.1`), and a file with a
    header but no rows."""
    path = Path(path)
    fmt = table_format(path, what)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        names = _csv_header(path) if fmt == "csv" else _parquet_names(path)
        df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{path}: cannot read {fmt}: {type(exc).__name__}: {first_line(exc)}") from None
    dupes = _duplicates(names)
    if dupes:
        raise DataError(f"{path}: duplicate column name(s) {', '.join(dupes)}; rename them so each column is unique")
    if len(df) == 0:
        raise DataError(f"{path}: no rows (only a header with {len(df.columns)} column(s))")
    return df
