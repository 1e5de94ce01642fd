"""Leakage in the raw layout: rows of a split found in an earlier split, against what the table's
own duplicate rows predict.

A user's table may hold the same row several times (repeated records, or a few coarse columns
that take the same values on many rows). A random split then puts copies of one row in train and
in val by chance, which is not leakage. Train measures that chance itself: the share of train rows
that equal another train row is the chance that one more row of the same table equals a train row
(a leave-one-out estimate), so it is the share of val (or test) rows expected in train. A split
fails when the share of its rows found in an earlier split is above that by more than
max(validate.leakage_tol, drift_noise_z standard errors). A table without duplicate rows expects
none, so one shared row fails, as in the numeric layout; a split holding copies of train rows
fails whatever the table. Train's share also stands for test rows found in val (an upper bound:
val is smaller than train).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations.expectations as gxe  # noqa: E402

from stages.core.params import ValidateParams  # noqa: E402
from stages.validation.gx import validate_frame  # noqa: E402
from stages.validation.raw import allowance  # noqa: E402
from stages.validation.report import describe_failure  # noqa: E402

log = logging.getLogger(__name__)

PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))  # (earlier, later)
PARAM = "validate.leakage_tol"


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One 64-bit hash per row of `columns`: equal rows (gaps in the same places) hash equal."""
    return pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()


def repeated_share(hashes: np.ndarray) -> float:
    """The share of rows equal to at least one other row of the same split."""
    if not len(hashes):
        return 0.0
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def shared_rows(hashes: dict[str, np.ndarray], params: ValidateParams) -> pd.DataFrame:
    """One row per pair of splits: the later split's rows found in the earlier one, their share,
    the share train's repeats predict, and the share allowed."""
    expected = repeated_share(hashes["train"])
    rows = []
    for earlier, later in PAIRS:
        n = len(hashes[later])
        shared = int(np.isin(hashes[later], hashes[earlier]).sum()) if n else 0
        allowed = expected + allowance(expected, params.leakage_tol, params.drift_noise_z, 1 / n) if n else 0.0
        rows.append({"pair": f"{later} in {earlier}", "rows": n, "shared": shared,
                     "shared_share": shared / n if n else 0.0, "expected": expected, "allowed": min(allowed, 1.0)})
    return pd.DataFrame(rows).set_index("pair")


def _found(table: pd.DataFrame, pairs: list[str]) -> str:
    """e.g. '45 of 90 rows of test in train (50.0%, allowed 9.1%)'"""
    return "; ".join(f"{int(table.loc[p, 'shared'])} of {int(table.loc[p, 'rows'])} rows of {p} "
                     f"({table.loc[p, 'shared_share']:.1%}, allowed {table.loc[p, 'allowed']:.1%})" for p in pairs)


def validate_leakage(context: Any, frames: dict[str, pd.DataFrame], columns: list[str], params: ValidateParams
                     ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """GX on the table of shared rows. Returns (checks, failures, warnings, the table's rows)."""
    table = shared_rows({s: row_hashes(f, columns) for s, f in frames.items()}, params)
    what = f"rows ({', '.join(columns)})" if len(columns) <= 3 else f"rows ({len(columns)} columns)"
    expected = (f"at most the share of train rows that repeat a train row ({table['expected'].iloc[0]:.1%}) plus "
                f"max({params.leakage_tol:g}, {params.drift_noise_z:g} standard errors) of a split's rows in an "
                "earlier split")
    check = gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="allowed", column_B="shared_share", or_equal=True,
                                                        meta={"check": "leakage", "expected": expected})
    results = validate_frame(context, "leakage", table, [check], cast=False, result_format="COMPLETE")
    failures, failing = [], []
    for er in (r for r in results.results if not r.success):
        unexpected = (er.result or {}).get("unexpected_index_list")
        if unexpected is None:  # GX could not evaluate it: say so, as for any expectation
            failures.append(describe_failure("all", er, table))
            continue
        failing = [item["pair"] for item in unexpected]
        failures.append({"split": "all", "check": "leakage", "expectation": er.expectation_config.type, "column": what,
                         "expected": expected, "observed": _found(table, failing),
                         "result": {"pairs": failing}, "param": PARAM})
    warnings = []
    tolerated = [p for p in table.index if table.loc[p, "shared"] and p not in failing]
    if tolerated:
        warnings.append({"split": "all", "check": "leakage", "severity": "warning", "column": what,
                         "expected": expected, "observed": _found(table, tolerated), "param": PARAM})
        log.warning("shared rows: %s; tolerated, %.1f%% of train's own rows repeat a train row (%s)",
                    _found(table, tolerated), 100 * table["expected"].iloc[0], PARAM)
    return len(table), failures, warnings, table.reset_index().to_dict(orient="records")
