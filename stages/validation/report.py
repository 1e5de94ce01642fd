"""The validate stage's report: GX expectation results turned into plain, readable entries.

Each failed check becomes {split, check, expectation, column, expected, observed, result}:
`expected` is the text the suite builder put in the expectation's meta, `observed` says in words
what GX saw (with the count of infinite values when a range check fails), `result` is GX's own
result dict made JSON-safe. `failure_message` is the list printed on stderr, one line per check,
each ending with the params key that relaxes the check, if one does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.errors import first_line
from stages.core.io import jsonable

MAX_LINES = 40  # failed checks listed on stderr; the report has them all
# the params key a failed check of the numeric layout names (raw layout entries carry their own)
NUMERIC_RELAXED_BY = {
    "min_rows": "validate.min_rows",
    "range": "validate.feature_bounds / validate.target_bounds / validate.bounds_margin",
    "drift_mean": "validate.drift_mean_tol",
    "drift_std": "validate.drift_std_tol",
    "class_balance": "validate.class_balance_tol",
    "leakage": "validate.check_leakage",
}


def _exception_message(info: dict[str, Any] | None) -> str | None:
    """GX nests exception info per metric in some versions; take the first raised one."""
    if not info:
        return None
    infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in infos:
        if item.get("raised_exception"):
            return first_line(item.get("exception_message") or "unknown error")
    return None


def nulls_observed(n: int, total: int) -> str:
    return f"{n} of {total} values null (NaN/None)"


def outside_observed(n: int, total: int, sample: list[Any], n_inf: int = 0) -> str:
    """A column-map failure: how many values, how many infinite (range), a few of them."""
    text = f"{n} of {total} values outside" + (f", {n_inf} of them infinite (inf)" if n_inf else "")
    shown = ", ".join(str(v) for v in jsonable(sample)[:5])
    return f"{text} (e.g. {shown})" if shown else text


def infinite_count(frame: pd.DataFrame, col: str) -> int:
    return int(np.isinf(frame[col].to_numpy(np.float64, na_value=np.nan)).sum()) if col in frame.columns else 0


def statistic_observed(name: str, value: float | None) -> str:
    """A mean or std; GX gives None for NaN."""
    if value is None or not math.isfinite(value):
        return f"{name} {value} (non-finite values in the column)"
    return f"{name} {value:.6g}"


def _observed(kind: str, kwargs: dict[str, Any], result: dict[str, Any], frame: pd.DataFrame) -> str:
    """What GX observed, in words."""
    col = kwargs.get("column")
    if kind == "expect_table_columns_to_match_ordered_list":
        found, wanted = list(result.get("observed_value") or []), list(kwargs["column_list"])
        missing = [c for c in wanted if c not in found]
        extra = [c for c in found if c not in wanted]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(map(str, extra))}"] if extra else [])
        return "; ".join(parts) or f"columns out of order: {', '.join(map(str, found))}"
    if kind == "expect_column_values_to_be_in_type_list":
        # object columns are checked value by value and have no single observed type
        dtype = frame[col].dtype if col in frame.columns else result.get("observed_value")
        mixed = f" ({result['unexpected_count']} of {result['element_count']} values not of those types)" \
            if "unexpected_count" in result else ""
        return f"dtype {dtype}{mixed}"
    if kind == "expect_column_distinct_values_to_contain_set":
        return f"missing {jsonable(result.get('partial_missing_list'))}"
    if "unexpected_count" in result:  # column-map expectations
        n, total = result["unexpected_count"], result.get("element_count")
        if kind == "expect_column_values_to_not_be_null":
            return nulls_observed(n, total)
        n_inf = infinite_count(frame, col) if kind == "expect_column_values_to_be_between" else 0
        return outside_observed(n, total, result.get("partial_unexpected_list") or [], n_inf)
    observed = result.get("observed_value")
    name = {"expect_column_mean_to_be_between": "mean", "expect_column_stdev_to_be_between": "std"}.get(kind)
    if name:
        return statistic_observed(name, observed)
    if kind.startswith("expect_table_row_count"):
        return f"{observed} rows"
    return str(jsonable(observed))


def describe_failure(split: str, er: Any, frame: pd.DataFrame) -> dict[str, Any]:
    """One failed GX expectation result as a report entry."""
    config = er.expectation_config
    meta, kwargs, result = config.meta or {}, dict(config.kwargs), dict(er.result or {})
    error = _exception_message(er.exception_info)
    column = kwargs.get("column")
    observed = f"GX error: {error}" if error else _observed(config.type, kwargs, result, frame)
    if config.type == "expect_table_columns_to_match_ordered_list":
        found = list(result.get("observed_value") or [])
        changed = [c for c in kwargs["column_list"] if c not in found] + [c for c in found if c not in kwargs["column_list"]]
        column = ", ".join(map(str, changed)) or None
    return {"split": split, "check": meta.get("check", config.type), "expectation": config.type,
            "column": column, "expected": meta.get("expected", str(jsonable(kwargs))),
            "observed": observed, "result": jsonable(result)}


def relaxed_by(failure: dict[str, Any]) -> str | None:
    """The params key that relaxes a failed check: the entry's own `param` (raw layout), else the
    numeric layout's key for its check; None when no key does (a schema, a dtype, a null)."""
    if "param" in failure:
        return failure["param"]
    if failure["check"] == "range" and "infinite" in str(failure.get("observed")):
        return None  # no bound admits inf
    return NUMERIC_RELAXED_BY.get(failure["check"])


def failure_lines(report: dict[str, Any]) -> list[str]:
    """One line per failed check: split, check, column, expected vs observed, and the params key
    that relaxes it."""
    sections = [*report["splits"].values(), *report["cross_split"].values()]
    return [
        f"{f['split']}: {f['check']}"
        + (f" [{f['column']}]" if f["column"] else "")
        + f": expected {f['expected']}; observed {f['observed']}"
        + (f" ({param})" if (param := relaxed_by(f)) else "")
        for s in sections for f in s["failed"]
    ]


def failure_message(report: dict[str, Any], report_path: str | Path) -> str:
    lines = failure_lines(report)
    shown = lines[:MAX_LINES]
    if len(lines) > MAX_LINES:
        shown.append(f"... and {len(lines) - MAX_LINES} more")
    return (f"data validation failed, {len(lines)} check(s) (details: {report_path}):\n  "
            + "\n  ".join(shown))


