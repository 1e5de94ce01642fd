"""The column checks of the raw layout (meta.json's `columns` set: user tables and the mixed kind).

Gaps, rare categories and outliers are a real table's own: a check fails when a split has more of
them than train, beyond a tolerance and beyond what sampling noise explains. Per feature (and a
regression target), by the column's kind in meta.json:

| check           | kinds                | fails when                                                  | relaxed by       |
|-----------------|----------------------|-------------------------------------------------------------|------------------|
| dtype           | all                  | the dtype is not the kind's (numbers, text, bool, datetime) | -                |
| missing         | all                  | missing share > train's + max(missing_rate_tol, z s.e.)     | missing_rate_tol |
| unseen          | categorical, boolean | share in categories train lacks > expected + max(tol, z s.e.) | unseen_tol     |
| range           | numeric, datetime    | any +-inf; share outside the robust bounds > tol + z s.e.   | outlier_tol      |
| drift_mean/_std | numeric, datetime    | as in the numeric layout, on the values inside the bounds   | drift_*_tol      |
| category_shares | categorical, boolean | a train category's share moved by > max(tol, z s.e.)        | category_share_tol |

z is validate.drift_noise_z: a 90-row split is not failed for what chance alone does to a share.
Values outside the range bounds within the allowance are a warning (logged, and listed under the
split's `warnings`), not a failure. "Missing" is what the model sees as missing: NaN, None, NaT,
and "" for a category. Datetimes are checked as days since 1970, as the model takes them. unseen
expects the share of values in categories train lacks to be about the share of train values
whose category occurs once in train (the Good-Turing estimate of unseen mass): a column of many
rare categories (near an id) gets new ones in val by chance.

This module computes the statistics: train's reference per column, and a split's column profile,
one row per column (pandas, one pass over each column). stages.validation.raw_checks has GX
validate that profile with a fixed handful of expectations (as stages.validation.profile does
for wide numeric splits), so GX's cost does not grow with the number of columns, and turns each
failing row into a report entry.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from stages.core.contracts import Column, Meta  # noqa: E402
from stages.core.params import ValidateParams  # noqa: E402
from stages.data.encoding import MISSING_KEY, category_keys, datetime_days  # noqa: E402
from stages.validation.expectations import (  # noqa: E402
    ColumnReference,
    check_feature_bounds,
    column_reference,
    drift_bounds,
    moments,
)

CATEGORICAL = ("categorical", "boolean")
VALUED = ("numeric", "datetime")
# the dtype families (dtype_family) each kind's column may have, and the words for them
KIND_FAMILIES = {"numeric": ("numeric",), "boolean": ("boolean",), "categorical": ("text",), "datetime": ("datetime",)}
KIND_DTYPES = {"numeric": "numeric dtype (float or int)", "boolean": "bool or boolean dtype",
               "categorical": "string or object dtype", "datetime": "datetime64 dtype"}
MIN_TAIL_ROWS = 5  # a robust bound's quantile has at least this many train values beyond it ...
MAX_QUANTILE = 0.25  # ... up to the quartiles (a column of a few values)


# --------------------------------------------------------------------------- column values


def dtype_family(series: pd.Series) -> str:
    """numeric, boolean, datetime or text (strings, objects, categoricals); else the dtype's name."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "text"
    return str(dtype)


def missing_count(series: pd.Series, kind: str) -> int:
    """Rows without a value as the model sees them: NaN, None, NaT, and "" for a category."""
    missing = series.isna()
    if kind in CATEGORICAL and dtype_family(series) == "text":
        missing |= series.astype(object).eq(MISSING_KEY)
    return int(missing.sum())


def category_counts(series: pd.Series) -> pd.Series:
    """Present values per category key (encoding.category_keys: 3 and 3.0 are one category),
    counted on the distinct values, not value by value."""
    counts = series.value_counts(dropna=True)
    counts = counts[counts > 0]
    keys = category_keys(pd.Series(counts.index.tolist(), dtype=object))
    by_key = pd.Series(counts.to_numpy(np.int64), index=keys).groupby(level=0, sort=False).sum()
    return by_key.drop(MISSING_KEY, errors="ignore")


def column_numbers(series: pd.Series, kind: str) -> np.ndarray:
    """float64 values (datetimes as days since 1970), NaN where missing."""
    if kind == "datetime":
        return datetime_days(series).astype(np.float64)
    return series.to_numpy(np.float64, na_value=np.nan)


def allowance(p: float, tol: float, z: float, inverse_n: float) -> float:
    """How far an observed share may lie above an expected share `p`: `tol`, or `z` standard
    errors of a share, sqrt(p (1 - p) inverse_n), when that is wider."""
    return max(tol, z * math.sqrt(max(p * (1 - p), 0.0) * inverse_n))


# ---------------------------------------------------------------------------- train's side


@dataclass(frozen=True)
class RawReference:
    """One column in train: what the other splits are measured against."""

    column: Column  # kind, train's missing rate (meta.json)
    rows: int  # train rows
    family: str  # train's dtype family (a column declared categorical may hold numbers)
    values: ColumnReference | None = None  # numeric, datetime: bounds; moments of the values inside them
    shares: dict[str, float] | None = None  # categorical, boolean: each train category's share of values
    present: int = 0  # categorical, boolean: train rows with a value
    unseen_mass: float = 0.0  # share of present train values whose category occurs once in train

    @property
    def families(self) -> tuple[str, ...]:
        """The dtype families accepted: the kind's, and train's own for a declared category."""
        accepted = KIND_FAMILIES[self.column.kind]
        return (*accepted, self.family) if self.column.kind in CATEGORICAL and self.family not in accepted else accepted


def value_reference(values: np.ndarray, params: ValidateParams, bounds: tuple[float, float] | None) -> ColumnReference:
    """Range bounds of one numeric (or datetime, in days) train column, and the moments of its
    values inside them, so the few outliers `range` tolerates do not move what drift compares.

    The bounds are the numeric layout's robust bounds, except that a quantile lies at least
    MIN_TAIL_ROWS values from either end: on a few hundred rows the 0.1% quantile is the extreme
    value itself, and in a user's table that is often the outlier."""
    finite = values[np.isfinite(values)]
    q = max(params.bounds_quantile, min(MIN_TAIL_ROWS / len(finite), MAX_QUANTILE)) if len(finite) else 0.0
    ref = column_reference(pd.Series(values), q, params.bounds_margin, bounds)
    if ref.low is None:
        return ref
    mean, std, kurtosis, n = moments(finite[(finite >= ref.low) & (finite <= ref.high)])
    return ColumnReference(ref.low, ref.high, ref.bounds_from, mean, std, kurtosis, n)


def raw_references(train: pd.DataFrame, meta: Meta, params: ValidateParams) -> dict[str, RawReference]:
    """A RawReference for every feature, and for a regression target, that train has."""
    check_feature_bounds(params, list(meta.feature_names))
    columns = list(meta.schema)
    bounds = dict(params.feature_bounds or {})
    if meta.task == "regression":
        columns.append(Column(meta.target, "numeric", 0.0))
        bounds[meta.target] = params.target_bounds
    out = {}
    for col in (c for c in columns if c.name in train.columns):
        series = train[col.name]
        family = dtype_family(series)
        ref = RawReference(col, len(series), family)
        if col.kind in VALUED and family in KIND_FAMILIES[col.kind]:
            values = value_reference(column_numbers(series, col.kind), params, bounds.get(col.name))
            ref = RawReference(col, len(series), family, values=values)
        elif col.kind in CATEGORICAL:
            counts = category_counts(series)
            present = int(counts.sum())
            ref = RawReference(col, len(series), family, shares=(counts / max(present, 1)).to_dict(), present=present,
                               unseen_mass=float((counts == 1).sum() / present) if present else 0.0)
        out[col.name] = ref
    return out


def reference_report(refs: dict[str, RawReference]) -> dict[str, Any]:
    """report["reference"]: per column what train gave the checks."""
    out: dict[str, Any] = {}
    for name, ref in refs.items():
        entry: dict[str, Any] = {"kind": ref.column.kind, "missing_rate": ref.column.missing_rate}
        if ref.values is not None:
            v = ref.values
            entry.update(low=v.low, high=v.high, bounds_from=v.bounds_from, mean=v.mean, std=v.std)
        if ref.shares is not None:
            entry.update(categories=len(ref.shares), unseen_mass=ref.unseen_mass)
        out[name] = entry
    return out


# ------------------------------------------------------------------------- the column profile

# one row per column; NaN where a check does not apply (another kind, train, a wrong dtype)
PROFILE_COLUMNS = ("kind", "dtype", "dtype_ok", "rows", "missing", "missing_share", "missing_allowed", "present",
                   "unseen", "unseen_share", "unseen_allowed", "infinite", "outside", "outside_share",
                   "outside_allowed", "inside", "mean", "mean_low", "mean_high", "std", "std_low", "std_high",
                   "share_category", "share", "share_train", "share_shift", "share_allowed")
# the profile column whose value says a check ran on a row
CHECKED_BY = {"dtype": "dtype_ok", "missing": "missing_allowed", "unseen": "unseen_allowed", "range": "infinite",
              "drift_mean": "mean_low", "drift_std": "std_low", "category_shares": "share_allowed"}


def _missing_stats(series: pd.Series, ref: RawReference, params: ValidateParams, target: bool) -> dict[str, Any]:
    """The missing share and what is allowed: train's plus the allowance (a target: none)."""
    n, p = len(series), ref.column.missing_rate
    missing = missing_count(series, ref.column.kind)
    allowed = 0.0 if target else min(p + allowance(p, params.missing_rate_tol, params.drift_noise_z,
                                                   1 / n + 1 / max(ref.rows, 1)), 1.0)
    return {"missing": missing, "missing_share": missing / n, "missing_allowed": allowed}


def _category_stats(series: pd.Series, ref: RawReference, params: ValidateParams) -> dict[str, Any]:
    """Values in categories train lacks (against the share train's one-row categories predict),
    and the train category whose share of values moved most for its allowance."""
    counts = category_counts(series)
    present = int(counts.sum())
    if not present or ref.shares is None:
        return {"present": present}
    z, mass = params.drift_noise_z, ref.unseen_mass
    unseen = int(counts[~counts.index.isin(list(ref.shares))].sum())
    row: dict[str, Any] = {"present": present, "unseen": unseen, "unseen_share": unseen / present,
                           "unseen_allowed": min(mass + allowance(mass, params.unseen_tol, z, 1 / present), 1.0)}
    if ref.shares:
        train = pd.Series(ref.shares)
        shares = counts.reindex(train.index, fill_value=0).to_numpy() / present
        inverse_n = 1 / present + 1 / ref.present
        allowed = np.array([allowance(p, params.category_share_tol, z, inverse_n) for p in train.to_numpy()])
        shift = np.abs(shares - train.to_numpy())
        worst = int(np.argmax(shift / allowed))
        row.update(share_category=str(train.index[worst]), share=float(shares[worst]),
                   share_train=float(train.iloc[worst]), share_shift=float(shift[worst]),
                   share_allowed=float(allowed[worst]))
    return row


def _value_stats(series: pd.Series, ref: RawReference, params: ValidateParams, drift: bool) -> dict[str, Any]:
    """Infinite values, the share outside the range bounds against outlier_tol (plus z standard
    errors of that share), and (val, test) the drift statistics of the values inside the bounds."""
    values = column_numbers(series, ref.column.kind)
    present = values[~np.isnan(values)]
    n = len(present)
    row: dict[str, Any] = {"present": n, "infinite": int(np.isinf(present).sum())}
    b = ref.values
    if b is None or b.low is None:
        return row
    inside = present[(present >= b.low) & (present <= b.high)]  # inf is outside any finite bounds
    outside = n - len(inside) - row["infinite"]
    tol = params.outlier_tol
    row.update(outside=outside, outside_share=outside / n if n else 0.0, inside=len(inside),
               outside_allowed=min(tol + (allowance(tol, 0.0, params.drift_noise_z, 1 / n) if n else 0.0), 1.0))
    d = drift_bounds(b, len(inside), params) if drift else None
    if d is not None:
        row.update(mean=float(inside.mean()), std=float(inside.std(ddof=1)), mean_low=d.mean_low,
                   mean_high=d.mean_high, std_low=d.std_low, std_high=d.std_high)
    return row


def profile_row(series: pd.Series, ref: RawReference, params: ValidateParams, drift: bool,
                target: bool = False) -> dict[str, Any]:
    """One column's statistics and allowances (`drift`: val and test, measured against train)."""
    row: dict[str, Any] = dict.fromkeys(PROFILE_COLUMNS, math.nan)
    row.update(kind=ref.column.kind, dtype=str(series.dtype), dtype_ok=dtype_family(series) in ref.families,
               rows=len(series), share_category=None)
    if not row["dtype_ok"]:
        return row  # the other checks would only repeat it
    row.update(_missing_stats(series, ref, params, target))
    if ref.column.kind in VALUED:
        row.update(_value_stats(series, ref, params, drift))
    elif drift:
        row.update(_category_stats(series, ref, params))
    return row


def column_profile(frame: pd.DataFrame, refs: dict[str, RawReference], params: ValidateParams, drift: bool,
                   target: str | None = None) -> pd.DataFrame:
    """One row per column of `refs` that the (non-empty) split has, indexed by column name."""
    rows = [profile_row(frame[name], ref, params, drift, name == target)
            for name, ref in refs.items() if name in frame.columns]
    names = [name for name in refs if name in frame.columns]
    return pd.DataFrame(rows, index=pd.Index(names, name="column"), columns=list(PROFILE_COLUMNS))
