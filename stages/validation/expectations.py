"""The expectation suites of the `validate` stage, built from params, meta.json and the train split.

Each expectation is there because it catches a failure the others miss (GX column-map
expectations skip nulls, so nulls need their own; a range check cannot see a shift that stays in
range, so drift needs its own). Each carries `meta = {"check": ..., "expected": ...}`: a short
check name and what was expected, in words, for the report and the stderr list.

| check           | GX expectation                            | catches                                      |
|-----------------|-------------------------------------------|----------------------------------------------|
| schema          | ExpectTableColumnsToMatchOrderedList      | a dropped, extra, renamed or reordered column |
| row_count       | ExpectTableRowCountToEqual (meta.json)    | a split file truncated or swapped vs meta.json |
| min_rows        | ExpectTableRowCountToBeBetween            | a split that is empty or tiny, even per meta  |
| dtype           | ExpectColumnValuesToBeInTypeList          | strings/bools/objects; float class labels    |
| nulls           | ExpectColumnValuesToNotBeNull             | NaN / None (the checks below skip nulls)     |
| range           | ExpectColumnValuesToBeBetween (finite)    | +-inf, sentinels, unit errors                 |
| labels          | ExpectColumnValuesToBeInSet               | a label outside the class set                |
| classes_present | ExpectColumnDistinctValuesToContainSet    | a class absent from a split (train included) |
| drift_mean      | ExpectColumnMeanToBeBetween (val, test)   | a shift that stays within the range bounds   |
| drift_std       | ExpectColumnStdevToBeBetween (val, test)  | a rescaled or collapsed (constant) feature   |
| leakage         | ExpectColumnValuesToBeUnique (row hashes) | a row present in more than one split         |

Class balance has no GX expectation (GX has none for a per-value proportion); it is computed in
stages.validation.checks and reported in the same format.

In a split with more than profile.WIDE_COLUMNS numeric features, those features' dtype, nulls,
range and drift checks run on a column profile instead (stages.validation.profile), with the same
bounds, verdicts and report entries; this suite then holds the table checks, the target's checks
and those of any feature of another dtype.

These checks are the numeric layout's (meta.json without `columns`: synthetic numeric data, where
any gap, outlier or shared row is a fault). The raw layout (user tables, the mixed kind) keeps this
suite's table checks and a classification target's checks; its columns are judged against train
with tolerances by stages.validation.raw, its shared rows by stages.validation.duplicates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from stages.core.contracts import Meta

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe  # noqa: E402

from stages.core.errors import ParamsError  # noqa: E402
from stages.core.params import ValidateParams  # noqa: E402

# the order of the checks in a split's suite, and so in its report
CHECKS = ("schema", "row_count", "min_rows", "dtype", "nulls", "missing", "unseen", "range", "drift_mean",
          "drift_std", "category_shares", "labels", "classes_present")  # missing, unseen, category_shares: raw layout
TABLE_CHECKS = CHECKS[:3]
DTYPE_EXPECTED = "numeric dtype (float or int)"
NULLS_EXPECTED = "no nulls (NaN or None)"
FLOAT_TYPES = ["float16", "float32", "float64"]
INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
HASH_COLUMN = "row_hash"


@dataclass(frozen=True)
class ColumnReference:
    """What a column looks like in train: range bounds and the statistics drift is measured against."""

    low: float | None  # None: no bounds could be derived (train column empty or not numeric)
    high: float | None
    bounds_from: str  # "train" or "params"
    mean: float
    std: float
    kurtosis: float  # E[(x - mean)^4] / std^4 (3 for a normal), for the standard error of a std
    n: int  # finite train values


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _finite_values(series: pd.Series) -> np.ndarray:
    values = series.to_numpy(np.float64, na_value=np.nan)
    return values[np.isfinite(values)]


def moments(values: np.ndarray) -> tuple[float, float, float, int]:
    """(mean, sample std, kurtosis E[(x - mean)^4] / std^4, n) of finite `values`; NaN where undefined."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = kurt = math.nan
    if n > 1:
        dev2 = np.square(values - mean)
        var = float(dev2.sum() / (n - 1))
        std = math.sqrt(var)
        kurt = float(np.square(dev2).mean() / var**2) if var > 0 else 3.0
    return mean, std, kurt, n


def column_reference(series: pd.Series | None, quantile: float, margin: float,
                     bounds: tuple[float, float] | None) -> ColumnReference:
    """Robust bounds and moments of one train column, from its finite values only.

    Bounds are the train quantiles [q, 1 - q] widened by `margin` times their distance, so a few
    outliers in train neither fail train nor make the bounds useless; explicit bounds win.
    """
    values = _finite_values(series) if series is not None and is_numeric(series) else np.empty(0)
    mean, std, kurt, n = moments(values)
    if bounds is not None:
        return ColumnReference(float(bounds[0]), float(bounds[1]), "params", mean, std, kurt, n)
    if not n:
        return ColumnReference(None, None, "train", mean, std, kurt, n)
    q_lo, q_hi = np.quantile(values, [quantile, 1 - quantile])
    width = margin * (q_hi - q_lo)
    return ColumnReference(float(q_lo - width), float(q_hi + width), "train", mean, std, kurt, n)


def check_feature_bounds(params: ValidateParams, features: list[str]) -> None:
    """validate.feature_bounds names only features of the data (else a ParamsError naming them)."""
    unknown = sorted(set(params.feature_bounds or {}) - set(features))
    if unknown:
        raise ParamsError(
            f"validate.feature_bounds: {', '.join(unknown)} not a feature of the data "
            f"(features: {', '.join(features)})"
        )


def reference_stats(params: ValidateParams, train: pd.DataFrame, meta: Meta) -> dict[str, ColumnReference]:
    """A ColumnReference for every feature, and for a regression target (its range)."""
    features = list(meta.feature_names)
    check_feature_bounds(params, features)
    columns = {c: (params.feature_bounds or {}).get(c) for c in features}
    if meta.task == "regression":
        columns[meta.target] = params.target_bounds
    return {
        col: column_reference(train[col] if col in train.columns else None,
                              params.bounds_quantile, params.bounds_margin, bounds)
        for col, bounds in columns.items()
    }


def _meta(check: str, expected: str) -> dict[str, str]:
    return {"check": check, "expected": expected}


def _g(x: float) -> str:
    return f"{x:.6g}"


class DriftBounds(NamedTuple):
    """What drift_mean and drift_std allow one val/test column, with the words the report uses."""

    mean_low: float
    mean_high: float
    mean_expected: str
    std_low: float
    std_high: float
    std_expected: str


def drift_bounds(ref: ColumnReference, n_split: int, params: ValidateParams) -> DriftBounds | None:
    """Mean within drift_mean_tol train stds of train's, std within drift_std_tol (relative);
    None when there is no spread to compare (one row, or no finite train std).

    Each tolerance is at least `drift_noise_z` standard errors of the difference between the two
    sample statistics, so sampling noise in a small split is not called drift (with 90 val rows
    a mean wanders about 0.1 std by chance alone).
    """
    if not (ref.n > 1 and n_split > 1 and math.isfinite(ref.std)):
        return None
    both = 1 / n_split + 1 / ref.n
    mean_tol = max(params.drift_mean_tol, params.drift_noise_z * math.sqrt(both))
    # standard error of a sample std, relative: sqrt((kurtosis - 1) / 4n), any distribution
    std_tol = max(params.drift_std_tol, params.drift_noise_z * 0.5 * math.sqrt(max(ref.kurtosis - 1, 0) * both))
    lo_m, hi_m = ref.mean - mean_tol * ref.std, ref.mean + mean_tol * ref.std
    lo_s, hi_s = max(ref.std * (1 - std_tol), 0.0), ref.std * (1 + std_tol)
    return DriftBounds(lo_m, hi_m, f"mean in [{_g(lo_m)}, {_g(hi_m)}] (train {_g(ref.mean)} +- {mean_tol:.3g} train std)",
                       lo_s, hi_s, f"std in [{_g(lo_s)}, {_g(hi_s)}] (train {_g(ref.std)} +- {std_tol:.0%})")


def drift_expectations(col: str, ref: ColumnReference, n_split: int, params: ValidateParams) -> list[Any]:
    """ExpectColumnMeanToBeBetween and ExpectColumnStdevToBeBetween for drift_bounds (none without)."""
    bounds = drift_bounds(ref, n_split, params)
    if bounds is None:
        return []
    return [
        gxe.ExpectColumnMeanToBeBetween(
            column=col, min_value=bounds.mean_low, max_value=bounds.mean_high,
            meta=_meta("drift_mean", bounds.mean_expected)),
        gxe.ExpectColumnStdevToBeBetween(
            column=col, min_value=bounds.std_low, max_value=bounds.std_high,
            meta=_meta("drift_std", bounds.std_expected)),
    ]


def range_expected(ref: ColumnReference) -> str:
    where = "validate bounds" if ref.bounds_from == "params" else "robust bounds from train"
    return f"finite values in [{_g(ref.low)}, {_g(ref.high)}] ({where})"


def split_expectations(split: str, frame: pd.DataFrame, meta: Meta, params: ValidateParams,
                       refs: dict[str, ColumnReference], profiled: Collection[str] = ()) -> list[Any]:
    """The suite for one split. Column checks go only on columns that exist with a numeric dtype:
    a missing or string column is reported once, by `schema` or `dtype`, not by every check.
    `profiled`: features whose column checks run on the column profile instead (profile.py)."""
    features, target = list(meta.feature_names), meta.target
    classification = meta.task == "classification"
    expected_rows = int(meta.rows[split])
    suite: list[Any] = [
        gxe.ExpectTableColumnsToMatchOrderedList(
            column_list=[*features, target],
            meta=_meta("schema", f"columns {', '.join([*features, target])} in this order")),
        gxe.ExpectTableRowCountToEqual(
            value=expected_rows, meta=_meta("row_count", f"{expected_rows} rows (data/meta.json)")),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=params.min_rows, meta=_meta("min_rows", f"at least {params.min_rows} rows (validate.min_rows)")),
    ]
    if frame.empty:  # nothing to check per column; the row-count checks say why
        return suite
    profiled = set(profiled)
    for col in [*features, target]:
        if col not in frame.columns or col in profiled:
            continue
        labels = classification and col == target
        suite.append(gxe.ExpectColumnValuesToBeInTypeList(
            column=col, type_list=INT_TYPES if labels else FLOAT_TYPES + INT_TYPES,
            meta=_meta("dtype", "integer dtype (class index)" if labels else DTYPE_EXPECTED)))
        if not is_numeric(frame[col]):
            continue
        suite.append(gxe.ExpectColumnValuesToNotBeNull(column=col, meta=_meta("nulls", NULLS_EXPECTED)))
        ref = refs.get(col)
        if ref is not None and ref.low is not None:
            suite.append(gxe.ExpectColumnValuesToBeBetween(
                column=col, min_value=ref.low, max_value=ref.high, meta=_meta("range", range_expected(ref))))
        if split != "train" and col in features and ref is not None:
            suite.extend(drift_expectations(col, ref, len(frame), params))
    if classification and target in frame.columns and is_numeric(frame[target]):
        classes = list(range(len(meta.classes)))
        suite.append(gxe.ExpectColumnValuesToBeInSet(
            column=target, value_set=classes,
            meta=_meta("labels", f"labels in the class set {classes}")))
        suite.append(present_classes_expectation(split, meta))
    return suite


def present_classes_expectation(split: str, meta: Meta) -> Any:
    """Every class in every split; in the raw layout, every class generate put in this split (a
    user's class of 3 rows cannot be in all three splits; meta.json `class_counts` says where)."""
    classes = list(range(len(meta.classes)))
    counts = (meta.class_counts or {}).get(split)
    if meta.columns is not None and counts is not None and len(counts) == len(classes):
        placed = [c for c in classes if counts[c] > 0]
        expected = f"every class {classes} present" if placed == classes else \
            f"every class generate put in this split {placed} present (meta.json class_counts)"
        classes = placed
    else:
        expected = f"every class {classes} present"
    return gxe.ExpectColumnDistinctValuesToContainSet(column=meta.target, value_set=classes,
                                                      meta=_meta("classes_present", expected))


def leakage_expectation() -> Any:
    """Uniqueness of the row hashes of all splits, each split's hashes de-duplicated first: a hash
    seen twice is a row in two splits (a row repeated inside one split is not leakage)."""
    return gxe.ExpectColumnValuesToBeUnique(
        column=HASH_COLUMN, meta=_meta("leakage", "no row (features + target) in more than one split"))
