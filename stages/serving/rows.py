"""The rows the export stage checks and times the exported graph on, in the two forms the
engines take: the encoded matrix (torch) and the graph's feeds (ONNX Runtime).

For a raw-row model the rows are the test split's raw frame plus EDGE_ROWS made from its first
row: every value missing (None, NaN, NaT), every category "" (numbers and dates missing), and
every category one no vocabulary holds (numbers and dates kept). They are what users send and
the test split may lack; parity must hold on them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stages.core.contracts import Column
from stages.data.encoding import MISSING_KEY, encode_frame, onnx_inputs
from stages.serving.predict import CATEGORY_KINDS, INPUT_NAME

EDGE_ROWS = ("missing values", "empty strings", "unseen categories")  # what each added row holds


@dataclass(frozen=True)
class CheckRows:
    """`x`: encode_frame's matrix (torch's input); `feeds`: the graph's inputs, row for row;
    the first `n_test` rows are the test split's, the rest EDGE_ROWS."""

    x: np.ndarray
    feeds: dict[str, np.ndarray]
    n_test: int

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: np.ndarray) -> CheckRows:
        """These rows (all counted as test rows: a latency batch or a calibration sample)."""
        return CheckRows(self.x[idx], {k: v[idx] for k, v in self.feeds.items()}, len(idx))


def matrix_rows(x: np.ndarray) -> CheckRows:
    """The numeric graph's rows: its one input is the feature matrix itself."""
    return CheckRows(x, {INPUT_NAME: x}, len(x))


def unseen_key(column: Column) -> str:
    key = "fitline-unseen-category"
    while key in set(column.vocabulary or ()):
        key += "_"
    return key


def edge_rows(frame: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """EDGE_ROWS for `columns`: categories None, "" and unseen; numbers and dates missing, missing
    and the column's first value (its dtype kept: NaN / NaT; an int column becomes float)."""
    n = len(EDGE_ROWS)
    keep_last = pd.Series([False] * (n - 1) + [True])
    rows = {}
    for c in columns:
        if c.kind in CATEGORY_KINDS:
            rows[c.name] = pd.Series([None, MISSING_KEY, unseen_key(c)], dtype=object)
        else:
            values = frame[c.name].dropna()
            values = values if len(values) else frame[c.name]
            rows[c.name] = values.iloc[[0] * n].reset_index(drop=True).where(keep_last)
    return pd.DataFrame(rows)


def raw_rows(frame: pd.DataFrame, columns: list[Column], where: str = "test split") -> CheckRows:
    """The raw-row graph's rows: `frame` then edge_rows, each encoded on its own (the edge rows'
    object columns would change how a concatenated frame's dtypes read)."""
    parts = [frame, edge_rows(frame, columns)]
    x = np.concatenate([encode_frame(p, columns, where) for p in parts])
    feeds = [onnx_inputs(p, columns, where) for p in parts]
    return CheckRows(x, {c.name: np.concatenate([f[c.name] for f in feeds]) for c in columns}, len(frame))


def tiled(rows: CheckRows, n: int) -> CheckRows:
    """`n` test rows, repeated when there are fewer (a full latency batch from a small split)."""
    return rows.take(np.arange(n) % rows.n_test)
