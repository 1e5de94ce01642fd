"""The raw layout's column checks run by GX: a split's column profile (stages.validation.raw)
validated by a fixed handful of expectations, each failing (column, check) turned into a report
entry that says what was allowed, what was found and which param relaxes it.

Entries have the numeric layout's fields (split, check, expectation, column, expected, observed,
result) plus `param`, the key that relaxes the check (absent when none does: a wrong dtype, an
infinite value, a missing target); a warning has `severity: warning`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import pandas as pd

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe  # noqa: E402

from stages.core.params import ValidateParams  # noqa: E402
from stages.validation.expectations import CHECKS, drift_bounds  # noqa: E402
from stages.validation.gx import validate_frame  # noqa: E402
from stages.validation.profile import failing_cells  # noqa: E402
from stages.validation.raw import (  # noqa: E402
    KIND_DTYPES,
    KIND_FAMILIES,
    RawReference,
    category_counts,
    column_numbers,
    column_profile,
)

log = logging.getLogger(__name__)

RELAXED_BY = {"missing": "validate.missing_rate_tol", "unseen": "validate.unseen_tol", "range": "validate.outlier_tol",
              "drift_mean": "validate.drift_mean_tol", "drift_std": "validate.drift_std_tol",
              "category_shares": "validate.category_share_tol"}
# the profile column whose value says a check ran on a row (NaN: it did not)
CHECKED_BY = {"dtype": "dtype_ok", "missing": "missing_allowed", "unseen": "unseen_allowed", "range": "infinite",
              "drift_mean": "mean_low", "drift_std": "std_low", "category_shares": "share_allowed"}
EXAMPLES = 5  # values quoted in a report line


# ------------------------------------------------------------------------------------ the suite


def _at_least(a: str, b: str, check: str, expected: str) -> Any:
    """a >= b on each profile row; a row with neither set is not checked (GX skips it)."""
    return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True,
                                                       meta={"check": check, "expected": expected})


def profile_expectations(drift: bool) -> list[Any]:
    """The profile's suite: train gets dtype, missing and range; val and test (`drift`) the rest too."""
    suite = [
        gxe.ExpectColumnValuesToBeInSet(column="dtype_ok", value_set=[True],
                                        meta={"check": "dtype", "expected": "every column: its kind's dtype"}),
        _at_least("missing_allowed", "missing_share", "missing", "every column: missing share within its allowance"),
        gxe.ExpectColumnValuesToBeInSet(column="infinite", value_set=[0],
                                        meta={"check": "range", "expected": "every numeric column: no infinite value"}),
        _at_least("outside_allowed", "outside_share", "range",
                  "every numeric column: share outside its range bounds within its allowance"),
    ]
    if drift:
        suite += [
            _at_least("unseen_allowed", "unseen_share", "unseen",
                      "every categorical column: share of unseen categories within its allowance"),
            _at_least("mean", "mean_low", "drift_mean", "every numeric column: mean within its drift bounds"),
            _at_least("mean_high", "mean", "drift_mean", "every numeric column: mean within its drift bounds"),
            _at_least("std", "std_low", "drift_std", "every numeric column: std within its drift bounds"),
            _at_least("std_high", "std", "drift_std", "every numeric column: std within its drift bounds"),
            _at_least("share_allowed", "share_shift", "category_shares",
                      "every categorical column: each category's share within its allowance"),
        ]
    return suite


def profile_checks(profile: pd.DataFrame) -> int:
    """The (column, check) pairs the profile judged."""
    return int(sum(profile[c].notna().sum() for c in CHECKED_BY.values()))


# ---------------------------------------------------------------------------------- the words


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _examples(values: list[Any]) -> str:
    shown = [repr(v) if isinstance(v, str) else str(v) for v in values[:EXAMPLES]]
    return f", e.g. {', '.join(shown)}" if shown else ""


def _outside_values(series: pd.Series, ref: RawReference) -> list[Any]:
    """The first values outside the range bounds, in row order, as the file has them."""
    values = column_numbers(series, ref.column.kind)
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(values) & ((values < ref.values.low) | (values > ref.values.high))
    found = series[outside].iloc[:EXAMPLES]
    return [str(v) for v in found] if ref.column.kind == "datetime" else found.tolist()


def _range_words(row: pd.Series, series: pd.Series, ref: RawReference) -> tuple[str, str, str | None]:
    b = ref.values
    where = "validate bounds" if b.bounds_from == "params" else "robust bounds from train"
    unit = " days since 1970" if ref.column.kind == "datetime" else ""
    expected = (f"finite values, at most {_pct(row['outside_allowed'])} outside [{b.low:.6g}, {b.high:.6g}]{unit} "
                f"({where})")
    found = []
    if row["infinite"]:
        found.append(f"{int(row['infinite'])} infinite (inf) value(s)")
    if row["outside"]:
        found.append(f"{int(row['outside'])} of {int(row['present'])} values outside ({_pct(row['outside_share'])})"
                     + _examples(_outside_values(series, ref)))
    too_many = row["outside_share"] > row["outside_allowed"]
    return expected, "; ".join(found), RELAXED_BY["range"] if too_many or not row["infinite"] else None


def _unseen_words(row: pd.Series, series: pd.Series, ref: RawReference) -> tuple[str, str, str | None]:
    counts = category_counts(series)
    unseen = counts[~counts.index.isin(list(ref.shares))].sort_values(ascending=False)
    expected = (f"at most {_pct(row['unseen_allowed'])} of values in categories train lacks (train has "
                f"{len(ref.shares)}; {_pct(ref.unseen_mass)} of its values are in one-row categories)")
    observed = (f"{_pct(row['unseen_share'])} ({int(row['unseen'])} of {int(row['present'])}) in unseen categories"
                + _examples(unseen.index.tolist()))
    return expected, observed, RELAXED_BY["unseen"]


def _words(check: str, row: pd.Series, series: pd.Series, ref: RawReference, params: ValidateParams,
           target: bool) -> tuple[str, str, str | None]:
    """(expected, observed, the param that relaxes it) of one column's check."""
    kind = ref.column.kind
    if check == "dtype":
        declared = f", or {ref.family} as train has it" if len(ref.families) > len(KIND_FAMILIES[kind]) else ""
        return f"{KIND_DTYPES[kind]}{declared} (a {kind} column in meta.json)", f"dtype {row['dtype']}", None
    if check == "missing":
        observed = f"{_pct(row['missing_share'])} missing ({int(row['missing'])} of {int(row['rows'])} rows)"
        if target:
            return "no missing target (generate drops those rows)", observed, None
        p, allowed = ref.column.missing_rate, row["missing_allowed"]
        return f"at most {_pct(allowed)} missing (train {_pct(p)} + {_pct(allowed - p)})", observed, RELAXED_BY[check]
    if check == "unseen":
        return _unseen_words(row, series, ref)
    if check == "range":
        return _range_words(row, series, ref)
    if check in ("drift_mean", "drift_std"):
        stat = "mean" if check == "drift_mean" else "std"
        bounds = drift_bounds(ref.values, int(row["inside"]), params)
        expected = bounds.mean_expected if stat == "mean" else bounds.std_expected
        value = row[stat]
        observed = f"{stat} {value:.6g}" if math.isfinite(value) else f"{stat} {value}"
        return f"{expected}, of the values inside the range bounds", observed, RELAXED_BY[check]
    return (f"each train category's share of values within max({params.category_share_tol:g}, "
            f"{params.drift_noise_z:g} standard errors) of train's",
            f"{row['share_category']!r} {_pct(row['share'])} vs train {_pct(row['share_train'])} "
            f"(allowed +-{_pct(row['share_allowed'])})", RELAXED_BY["category_shares"])


def raw_entry(split: str, check: str, col: str, row: pd.Series, series: pd.Series, ref: RawReference,
              params: ValidateParams, target: bool = False, severity: str | None = None) -> dict[str, Any]:
    """One column's check as a report entry (a failure, or with `severity` a warning)."""
    expected, observed, param = _words(check, row, series, ref, params, target)
    result = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v)) and v is not None}
    entry = {"split": split, "check": check, "expectation": "column profile (stages.validation.raw)", "column": col,
             "expected": expected, "observed": observed, "result": result}
    if param:
        entry["param"] = param
    if severity:
        entry["severity"] = severity
    return entry


# -------------------------------------------------------------------------------------- the run


def validate_raw_columns(context: Any, split: str, frame: pd.DataFrame, refs: dict[str, RawReference],
                         params: ValidateParams, target: str) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Profile one split's raw columns and validate the profile with GX. Returns (checks, failures:
    one entry per failing column and check, in column then check order, warnings: columns with
    values outside their range bounds, but within the allowance)."""
    if frame.empty:  # the row-count checks say why
        return 0, [], []
    drift = split != "train"
    profile = column_profile(frame, refs, params, drift, target)
    if profile.empty:
        return 0, [], []
    results = validate_frame(context, f"{split} columns", profile, profile_expectations(drift), cast=False,
                             result_format="COMPLETE")
    failing, errors = failing_cells(split, results, profile)
    position = {c: i for i, c in enumerate(profile.index)}
    order = sorted(failing, key=lambda key: (position[key[0]], CHECKS.index(key[1])))
    failures = [raw_entry(split, check, col, profile.loc[col], frame[col], refs[col], params, col == target)
                for col, check in order]
    tolerated = [c for c in profile.index[profile["outside"] > 0] if (c, "range") not in failing]
    warnings = [raw_entry(split, "range", col, profile.loc[col], frame[col], refs[col], params, col == target,
                          severity="warning") for col in tolerated]
    for w in warnings:
        log.warning("%s: range [%s]: %s; tolerated, at most %s allowed (%s)", split, w["column"], w["observed"],
                    f"{profile.loc[w['column'], 'outside_allowed']:.1%}", w["param"])
    return profile_checks(profile), errors + failures, warnings
