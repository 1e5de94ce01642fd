"""The column checks of a wide split as one column profile, checked by a handful of GX
expectations instead of five per column.

GX's cost is per expectation (each builds its own metric graph, configuration copies and
result), not per value, so a suite of one expectation per check and column grows by seconds per
hundred columns. Above WIDE_COLUMNS plain numeric features, a split's dtype, nulls, range and
drift checks of those features are instead computed with pandas a block of columns at a time
(the same reductions GX's pandas engine runs, so the same numbers) into a profile with one row
per column: dtype, nulls, values outside the range bounds, and the mean and std next to the
bounds drift allows. GX validates that profile (`nulls` in {0}, `mean >= mean_low`, ...) and
names each failing column by the profile's index; each failing column becomes the report entry
the per-column expectation would have given (same check, column, expected, observed and result),
its `expectation` marked "(column profile)".
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe  # noqa: E402

from stages.core.params import ValidateParams  # noqa: E402
from stages.validation.expectations import (  # noqa: E402
    CHECKS,
    DTYPE_EXPECTED,
    FLOAT_TYPES,
    INT_TYPES,
    NULLS_EXPECTED,
    TABLE_CHECKS,
    ColumnReference,
    drift_bounds,
    range_expected,
)
from stages.validation.gx import BATCH_BYTES, gx_dtype, gx_frame, validate_frame  # noqa: E402
from stages.validation.report import (  # noqa: E402
    describe_failure,
    infinite_count,
    nulls_observed,
    outside_observed,
    statistic_observed,
)

# more plain numeric features than this: their column checks run on the column profile
WIDE_COLUMNS = 50
PARTIAL = 20  # unexpected values a GX BASIC result lists
# the per-column expectation each profile check stands for
PER_COLUMN = {
    "dtype": "expect_column_values_to_be_in_type_list",
    "nulls": "expect_column_values_to_not_be_null",
    "range": "expect_column_values_to_be_between",
    "drift_mean": "expect_column_mean_to_be_between",
    "drift_std": "expect_column_stdev_to_be_between",
}


def profiled_columns(frame: pd.DataFrame, features: list[str], wide_columns: int = WIDE_COLUMNS) -> list[str]:
    """The features whose column checks run on the profile: every feature of a numpy float or
    integer dtype, when there are more than `wide_columns` of them; none otherwise (a narrow split
    keeps one GX expectation per check and column). The target (with its label checks) and
    features of other dtypes (bool, object, nullable, datetime: GX judges those value by value)
    always keep their own expectations."""
    if frame.empty:
        return []
    dtypes = dict(zip(frame.columns, frame.dtypes))
    plain = [c for c in features if isinstance(dtype := dtypes.get(c), np.dtype) and dtype.kind in "fiu"]
    return plain if len(plain) > wide_columns else []


def profile_bounds(columns: list[str], refs: dict[str, ColumnReference], n_split: int,
                   params: ValidateParams, drift: bool) -> pd.DataFrame:
    """Per column: the range bounds (NaN: no range check) and, with `drift`, the drift bounds
    (NaN: no drift check)."""
    rows = []
    for col in columns:
        ref = refs.get(col)
        has_range = ref is not None and ref.low is not None
        d = drift_bounds(ref, n_split, params) if drift and ref is not None else None
        rows.append((ref.low if has_range else math.nan, ref.high if has_range else math.nan,
                     *((d.mean_low, d.mean_high, d.std_low, d.std_high) if d else (math.nan,) * 4)))
    bounds = pd.DataFrame(rows, index=pd.Index(columns, name="column"),
                          columns=["low", "high", "mean_low", "mean_high", "std_low", "std_high"])
    return bounds if drift else bounds[["low", "high"]]


def _float_block(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` as one float64 block, each column's values contiguous: pandas then reduces each
    column as it reduces a single one (pairwise sums), so means and stds equal GX's to the bit."""
    values = np.empty((len(columns), len(frame)))
    for j, col in enumerate(columns):
        values[j] = frame[col].to_numpy(np.float64)
    return pd.DataFrame(values.T, columns=columns, copy=False)


def column_profile(frame: pd.DataFrame, bounds: pd.DataFrame, max_bytes: int = BATCH_BYTES) -> pd.DataFrame:
    """One row per column of `bounds`: its dtype as GX gets it, nulls, outside_range (non-null
    values outside [low, high], infinities included), and where drift is checked mean and std
    (pandas', as GX computes them) beside their bounds. NaN where a check does not apply.

    Columns go a block at a time, a block's float64 copy and its temporaries within `max_bytes`.
    """
    columns = list(bounds.index)
    per_block = max(1, max_bytes // 4 // (max(len(frame), 1) * 8))
    parts = []
    for i in range(0, len(columns), per_block):
        block = _float_block(frame, columns[i:i + per_block])
        b = bounds.iloc[i:i + per_block]
        values = block.to_numpy().T  # one row per column (a view)
        with np.errstate(all="ignore"):  # NaN bounds, inf values: counted or skipped, never warned
            outside = ((values < b["low"].to_numpy()[:, None]) | (values > b["high"].to_numpy()[:, None])).sum(axis=1)
            part = pd.DataFrame({"nulls": np.isnan(values).sum(axis=1),
                                 "outside_range": np.where(b["low"].isna(), np.nan, outside)}, index=b.index)
            if "mean_low" in b:
                checked = b["mean_low"].notna().to_numpy()
                part["mean"] = np.where(checked, block.mean().to_numpy(), np.nan)
                part["std"] = np.where(checked, block.std().to_numpy(), np.nan)
        parts.append(part)
    profile = pd.concat(parts) if parts else pd.DataFrame(columns=["nulls", "outside_range"])
    dtypes = dict(zip(frame.columns, frame.dtypes))
    profile.insert(0, "dtype", [str(gx_dtype(dtypes[c])) for c in columns])
    for stat in ("mean", "std"):
        if f"{stat}_low" in bounds:
            profile[f"{stat}_low"], profile[f"{stat}_high"] = bounds[f"{stat}_low"], bounds[f"{stat}_high"]
    return profile


def _meta(check: str, expected: str) -> dict[str, str]:
    return {"check": check, "expected": expected}


def profile_expectations(drift: bool) -> list[Any]:
    """The profile's suite; a pair check skips a row whose two values are both NaN (not checked)."""
    suite = [
        gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=FLOAT_TYPES + INT_TYPES,
                                        meta=_meta("dtype", f"every column: {DTYPE_EXPECTED}")),
        gxe.ExpectColumnValuesToBeInSet(column="nulls", value_set=[0], meta=_meta("nulls", f"every column: {NULLS_EXPECTED}")),
        gxe.ExpectColumnValuesToBeInSet(column="outside_range", value_set=[0],
                                        meta=_meta("range", "every column: finite values within its range bounds")),
    ]
    if drift:
        for stat, check in (("mean", "drift_mean"), ("std", "drift_std")):
            expected = f"every val/test column: {stat} within its drift bounds"
            suite += [
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=stat, column_B=f"{stat}_low", or_equal=True,
                                                            meta=_meta(check, expected)),
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=f"{stat}_high", column_B=stat, or_equal=True,
                                                            meta=_meta(check, expected)),
            ]
    return suite


def profile_checks(profile: pd.DataFrame) -> int:
    """The per-column checks the profile stands for (as many as a per-column suite would hold)."""
    checked = ["dtype", "nulls", "outside_range"] + [f"{s}_low" for s in ("mean", "std") if s in profile]
    return int(profile[checked].notna().to_numpy().sum())


def _range_sample(frame: pd.DataFrame, col: str, low: float, high: float) -> list[Any]:
    """The first unexpected values, in row order and in GX's dtype (ints stay ints)."""
    values = gx_frame(frame[[col]])[col]
    with np.errstate(invalid="ignore"):
        return values[values.notna() & ((values < low) | (values > high))].iloc[:PARTIAL].tolist()


def profile_failure(split: str, check: str, col: str, row: pd.Series, frame: pd.DataFrame,
                    ref: ColumnReference, params: ValidateParams) -> dict[str, Any]:
    """The report entry the per-column expectation gives for `col` failing `check` (report.py)."""
    total = len(frame)
    if check == "dtype":
        dtype = gx_dtype(frame[col].dtype)
        expected, observed = DTYPE_EXPECTED, f"dtype {frame[col].dtype}"
        result = {"observed_value": getattr(getattr(dtype, "type", None), "__name__", str(dtype))}
    elif check == "nulls":
        n = int(row["nulls"])
        expected, observed = NULLS_EXPECTED, nulls_observed(n, total)
        result = {"element_count": total, "unexpected_count": n, "unexpected_percent": n / total * 100,
                  "partial_unexpected_list": [math.nan] * min(n, PARTIAL)}
    elif check == "range":
        n, missing = int(row["outside_range"]), int(row["nulls"])
        sample = _range_sample(frame, col, ref.low, ref.high)
        expected = range_expected(ref)
        observed = outside_observed(n, total, sample, infinite_count(frame, col))
        result = {"element_count": total, "unexpected_count": n, "unexpected_percent": n / (total - missing) * 100,
                  "partial_unexpected_list": sample, "missing_count": missing,
                  "missing_percent": missing / total * 100, "unexpected_percent_total": n / total * 100,
                  "unexpected_percent_nonmissing": n / (total - missing) * 100}
    else:  # drift_mean, drift_std
        stat = "mean" if check == "drift_mean" else "std"
        value = None if math.isnan(row[stat]) else float(row[stat])  # GX reports NaN as None
        bounds = drift_bounds(ref, total, params)
        expected = bounds.mean_expected if stat == "mean" else bounds.std_expected
        observed, result = statistic_observed(stat, value), {"observed_value": value}
    return {"split": split, "check": check, "expectation": f"{PER_COLUMN[check]} (column profile)",
            "column": col, "expected": expected, "observed": observed, "result": result}


def failing_cells(split: str, results: Any, profile: pd.DataFrame) -> tuple[dict[tuple[str, str], None], list]:
    """(column, check) of every failing row of a profile's GX results, in order and once each (a
    NaN mean fails both of its pair checks), and the report entries of expectations GX could not
    evaluate at all."""
    failing: dict[tuple[str, str], None] = {}
    errors = []
    for er in results.results:
        if er.success:
            continue
        unexpected = (er.result or {}).get("unexpected_index_list")
        if unexpected is None:  # GX could not evaluate it: say so, as for any expectation
            errors.append(describe_failure(split, er, profile))
            continue
        for item in unexpected:
            failing.setdefault((item["column"], er.expectation_config.meta["check"]))
    return failing, errors


def validate_profile(context: Any, split: str, frame: pd.DataFrame, columns: list[str],
                     refs: dict[str, ColumnReference], params: ValidateParams,
                     max_bytes: int = BATCH_BYTES) -> tuple[int, list[dict[str, Any]]]:
    """Profile `columns` of one split, validate the profile with GX; return (checks it stands
    for, one report entry per failing column and check)."""
    drift = split != "train"
    profile = column_profile(frame, profile_bounds(columns, refs, len(frame), params, drift), max_bytes)
    results = validate_frame(context, f"{split} column profile", profile, profile_expectations(drift),
                             cast=False, result_format="COMPLETE")
    failing, errors = failing_cells(split, results, profile)
    failures = [profile_failure(split, check, col, profile.loc[col], frame, refs.get(col), params)
                for col, check in failing]
    return profile_checks(profile), errors + failures


def in_suite_order(failures: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Failures in the order a per-column suite lists them: the table checks, then column by
    column, each column's checks in CHECKS order."""
    position = {c: i for i, c in enumerate(columns)}
    rank = {c: i for i, c in enumerate(CHECKS)}

    def key(failure: dict[str, Any]) -> tuple[int, int]:
        if failure["check"] in TABLE_CHECKS:
            return -1, rank[failure["check"]]
        return position.get(failure["column"], len(position)), rank.get(failure["check"], len(rank))

    return sorted(failures, key=key)
