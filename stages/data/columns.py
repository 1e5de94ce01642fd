"""What each column of a table is: numeric, boolean, categorical or datetime, or left out and why;
the form the splits store it in; and the schema meta.json records from the train rows (missing
rates, vocabularies with rare categories pooled out).

Typing looks at the whole table (what a column is does not depend on the split); the schema's
statistics come from the train rows only, as everything else the model is fitted on.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import Column, ColumnKind
from stages.core.errors import DataError
from stages.data.encoding import MISSING_KEY, category_keys

log = logging.getLogger(__name__)

DATE_SHARE = 0.95  # text is dates when this share of its values parse as dates
ID_DISTINCT = 0.95  # text with this share of distinct values...
ID_MIN_VALUES = 20  # ...among at least this many values is an id, not a category
DATE_SAMPLE = 2000  # values parsed to decide (dateutil parses one value at a time)
# A date has a year, or day/month/year, in digits. dateutil also reads "March", "1st" and "10:30"
# as dates, filling the rest from today: without this, such text would become run-dependent days.
_DATE_SHAPE = re.compile(r"\d{4}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2}")
BOOLEAN_VOCABULARY = ["False", "True"]  # encoding.category_keys of False and True


def _bool_objects(values: pd.Series) -> bool:
    """An object column holding only bools and gaps (what a CSV's True/False column with empty
    cells, or a Parquet bool column with nulls, reads as)."""
    if values.dtype != object:
        return False
    present = values.dropna().tolist()
    return bool(present) and all(isinstance(v, (bool, np.bool_)) for v in present)


def _is_text(values: pd.Series) -> bool:
    return not (pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values)
                or pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)
                or _bool_objects(values))


def present_text(values: pd.Series) -> pd.Series:
    """A text column's values that count as present, as strings (NaN, None and "" are missing,
    as in encoding.category_keys)."""
    text = values.dropna().astype(str)
    return text[text != MISSING_KEY]


def _date_share(text: pd.Series) -> float:
    """The share of `text` (an evenly spaced sample of it, so the same file decides the same) that
    reads as dates."""
    if len(text) > DATE_SAMPLE:
        text = text.iloc[np.linspace(0, len(text) - 1, DATE_SAMPLE).astype(int)]
    shaped = text.str.contains(_DATE_SHAPE.pattern, regex=True)
    if shaped.mean() < DATE_SHARE:  # most text columns end here, without the slow parse
        return float(shaped.mean())
    parsed = pd.to_datetime(text.where(shaped), errors="coerce", utc=True, format="mixed")
    return float(parsed.notna().mean())


def _empty(values: pd.Series) -> bool:
    return present_text(values).empty if _is_text(values) else not values.notna().any()


def infer_kind(values: pd.Series) -> tuple[ColumnKind | None, str]:
    """One column's kind, or None and why it is left out of the features."""
    if _empty(values):
        return None, "no values"
    if pd.api.types.is_bool_dtype(values) or _bool_objects(values):
        return "boolean", ""
    if pd.api.types.is_datetime64_any_dtype(values):
        return "datetime", ""
    if pd.api.types.is_numeric_dtype(values):
        return "numeric", ""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return "categorical", ""
    text = present_text(values)
    if _date_share(text) >= DATE_SHARE:
        return "datetime", ""
    distinct = text.nunique()
    if len(text) >= ID_MIN_VALUES and distinct >= ID_DISTINCT * len(text):
        return None, (f"id-like: {distinct} distinct values in {len(text)} rows "
                      "(to keep it, declare it in data.columns)")
    return "categorical", ""


def _not_numbers(values: pd.Series) -> pd.Series:
    """The present values of a text column that are not numbers (as encoding.numeric_values reads)."""
    blank = values.isna() | values.astype(str).str.strip().eq("")
    numbers = pd.to_numeric(values.where(~blank), errors="coerce")
    return values[numbers.isna() & ~blank]


def declared_kind(values: pd.Series, declared: str, name: str, where: str) -> tuple[ColumnKind | None, str]:
    """A kind declared in data.columns, checked against the values: text declared numeric must
    be all numbers, datetime must be text or timestamps of which some parse."""
    if declared == "drop":
        return None, "declared drop in data.columns"
    if declared == "numeric" and _is_text(values):
        bad = _not_numbers(values)
        if len(bad):
            raise DataError(f"data.columns: {name!r} is declared numeric, but {len(bad)} value(s) in {where} "
                            f"are not numbers, e.g. {str(bad.iloc[0])!r} (declare it categorical or fix the file)")
    if declared == "datetime" and not pd.api.types.is_datetime64_any_dtype(values):
        if not _is_text(values):
            raise DataError(f"data.columns: {name!r} is declared datetime, but holds {values.dtype} values in {where}; "
                            "datetime needs dates as text or timestamps (leave epoch numbers numeric)")
        text = present_text(values)
        if text.empty or pd.to_datetime(text, errors="coerce", utc=True, format="mixed").isna().all():
            example = f", e.g. {text.iloc[0]!r}" if len(text) else ""
            raise DataError(f"data.columns: {name!r} is declared datetime, but none of its values in {where} "
                            f"is a date{example}")
    return declared, ""  # type: ignore[return-value]


def type_columns(df: pd.DataFrame, overrides: dict[str, str],
                 where: str) -> tuple[dict[str, ColumnKind], dict[str, str]]:
    """The kept features' kinds (in the table's column order) and the left-out columns' reasons."""
    unknown = [n for n in overrides if n not in df.columns]
    if unknown:
        raise DataError(f"data.columns: {', '.join(map(repr, unknown))} not in {where} "
                        f"(columns: {', '.join(map(str, df.columns))})")
    kinds: dict[str, ColumnKind] = {}
    dropped: dict[str, str] = {}
    for name in df.columns:
        declared = overrides.get(name)
        if declared is not None and declared != "drop" and _empty(df[name]):
            kind, reason = None, "no values"  # a declared kind cannot give an empty column a value
        elif declared is not None:
            kind, reason = declared_kind(df[name], declared, name, where)
        else:
            kind, reason = infer_kind(df[name])
        if kind is None:
            dropped[str(name)] = reason
        else:
            kinds[str(name)] = kind
    return kinds, dropped


def stored_values(values: pd.Series, kind: ColumnKind, name: str) -> pd.Series:
    """A column as the splits hold it: the user's values, except dates parsed (UTC, microseconds,
    as encoding.datetime_days reads them), text declared numeric parsed to float64, and a bool
    column with gaps as pandas' nullable boolean (Parquet's bool with nulls)."""
    if kind == "datetime":
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed").dt.as_unit("us")
        if _is_text(values):
            text = present_text(values)
            lost = text[parsed.loc[text.index].isna()]
            if len(lost):
                log.info("column %r: %d value(s) are not dates, e.g. %r; the model takes them as missing",
                         name, len(lost), lost.iloc[0])
        return parsed
    if kind == "numeric" and (pd.api.types.is_bool_dtype(values) or _bool_objects(values)):
        return values.astype("boolean").astype("Float64").astype("float64")  # 0/1, NaN for a gap
    if kind == "numeric" and not pd.api.types.is_numeric_dtype(values):
        blank = values.isna() | values.astype(str).str.strip().eq("")
        return pd.to_numeric(values.where(~blank), errors="coerce").astype("float64")
    if kind == "boolean" and _bool_objects(values):
        return values.astype("boolean")
    return values


class TrainStats:
    """What the schema needs from the train rows (missing values, category counts), added up
    one chunk of rows at a time so a generator never holds the whole split."""

    def __init__(self, kinds: dict[str, ColumnKind]) -> None:
        self.kinds = dict(kinds)
        self.rows = 0
        self.missing = dict.fromkeys(kinds, 0)
        self.counts: dict[str, Counter[str]] = {n: Counter() for n, k in kinds.items()
                                                if k in ("boolean", "categorical")}

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for name in self.kinds:
            if name in self.counts:
                keys = category_keys(frame[name])
                present = keys[keys != MISSING_KEY]
                self.missing[name] += len(keys) - len(present)
                found, n = np.unique(present.astype(str), return_counts=True)
                self.counts[name].update(dict(zip(found.tolist(), n.tolist())))
            else:
                self.missing[name] += int(frame[name].isna().sum())

    def columns(self, min_count: int) -> list[Column]:
        """The schema: each column's kind, train missing rate and vocabulary."""
        out = []
        for name, kind in self.kinds.items():
            rate = round(self.missing[name] / self.rows, 6) if self.rows else 0.0
            vocab: list[str] | None = None
            if kind == "boolean":
                vocab = list(BOOLEAN_VOCABULARY)
            elif kind == "categorical":
                vocab = vocabulary(self.counts[name], min_count)
            out.append(Column(name=name, kind=kind, missing_rate=rate, vocabulary=vocab))
        return out


def vocabulary(counts: dict[str, int] | Counter[str], min_count: int) -> list[str]:
    """Train categories, most frequent first (ties by key, so the order is reproducible). Those on
    fewer than `min_count` train rows are pooled out: the model cannot learn much from a handful
    of rows, and an unseen category at prediction time lands in the same UNKNOWN index. Pooling
    is skipped when it would leave fewer than 2 categories."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [key for key, n in ranked if n >= min_count]
    return kept if len(kept) >= 2 else [key for key, _ in ranked]


def describe_dropped(dropped: dict[str, Any]) -> str:
    return "; ".join(f"{name!r} ({reason})" for name, reason in dropped.items())
