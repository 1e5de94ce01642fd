"""Synthetic kind `mixed`: a regression on the kinds of columns people's tables have, with known
ground truth, written in the raw layout (meta.json's `columns` set) as a user file would be.

    y = intercept + x @ coefficients              numeric x0..x{n_features-1}, standard normal
        + city offset + segment offset            categorical (strings), fixed level frequencies
        + member offset                           boolean
        + per_year * years since 2020-01-01       datetime (signup, uniform over 2020-2024)
        + noise * standard normal

Then each feature value is blanked independently with probability data.missing_rate (MCAR). The
target is computed from the values before blanking, so a blanked value hides information: the
best possible prediction replaces a missing term by its mean (`expected_target`), and the
irreducible MSE is noise^2 plus missing_rate times the sum of the terms' variances.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import ColumnKind
from stages.core.params import DataParams
from stages.core.resources import check_fits
from stages.data.columns import TrainStats
from stages.data.splits import assign_splits, frame_schema, write_frame_rows
from stages.data.synthetic import linear_truth

# level -> frequency; Quito at 5% still has ~700 train rows at the default 20000 rows
CATEGORIES = {
    "city": {"Lisbon": 0.30, "Oslo": 0.25, "Lima": 0.20, "Kyoto": 0.12, "Accra": 0.08, "Quito": 0.05},
    "segment": {"basic": 0.5, "plus": 0.3, "pro": 0.2},
}
MEMBER_SHARE = 0.4
SIGNUP_START, SIGNUP_DAYS = "2020-01-01", 1827  # 2020-01-01 .. 2024-12-31
YEAR_DAYS = 365.25
EXTRA_COLUMNS: dict[str, ColumnKind] = {"city": "categorical", "segment": "categorical",
                                        "member": "boolean", "signup": "datetime"}


def column_kinds(p: DataParams) -> dict[str, ColumnKind]:
    return {**{f"x{i}": "numeric" for i in range(p.n_features)}, **EXTRA_COLUMNS}


def _truth(p: DataParams, rng: np.random.Generator) -> dict[str, Any]:
    truth = linear_truth(p, rng)
    truth["categorical"] = {name: dict(zip(levels, rng.uniform(-2.0, 2.0, len(levels)).tolist()))
                            for name, levels in CATEGORIES.items()}
    truth["frequencies"] = CATEGORIES
    member_offset = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0))
    truth["boolean"] = {"member": {"share": MEMBER_SHARE, "offset": member_offset}}
    truth["datetime"] = {"signup": {"start": SIGNUP_START, "days": SIGNUP_DAYS,
                                    "per_year": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5))}}
    return truth


def _term_means_and_variances(truth: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Each feature's contribution to the target: its mean and variance over the generated rows."""
    means = {f"x{i}": 0.0 for i in range(len(truth["coefficients"]))}
    variances = {f"x{i}": c * c for i, c in enumerate(truth["coefficients"])}
    for name, offsets in truth["categorical"].items():
        p = np.array([truth["frequencies"][name][k] for k in offsets])
        o = np.array(list(offsets.values()))
        means[name], variances[name] = float(p @ o), float(p @ o**2 - (p @ o) ** 2)
    member = truth["boolean"]["member"]
    means["member"] = member["share"] * member["offset"]
    variances["member"] = member["share"] * (1 - member["share"]) * member["offset"] ** 2
    signup = truth["datetime"]["signup"]
    slope = signup["per_year"] / YEAR_DAYS  # per day; days uniform on 0..days-1
    means["signup"] = slope * (signup["days"] - 1) / 2
    variances["signup"] = slope**2 * (signup["days"] ** 2 - 1) / 12
    return means, variances


def expected_target(frame: pd.DataFrame, truth: dict[str, Any]) -> np.ndarray:
    """The best prediction of y from a mixed frame's (possibly blanked) features: each term from
    its value, or its mean where the value is missing. Its MSE is the irreducible error."""
    means, _ = _term_means_and_variances(truth)
    out = np.full(len(frame), truth["intercept"], dtype=np.float64)
    for i, c in enumerate(truth["coefficients"]):
        out += np.nan_to_num(frame[f"x{i}"].to_numpy(np.float64, na_value=np.nan) * c, nan=means[f"x{i}"])
    for name, offsets in truth["categorical"].items():
        out += frame[name].map(offsets).astype("float64").fillna(means[name]).to_numpy()
    member = frame["member"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    out += np.nan_to_num(member * truth["boolean"]["member"]["offset"], nan=means["member"])
    signup = truth["datetime"]["signup"]
    days = (frame["signup"] - pd.Timestamp(signup["start"], tz="UTC")).dt.days.to_numpy(np.float64, na_value=np.nan)
    out += np.nan_to_num(days * signup["per_year"] / YEAR_DAYS, nan=means["signup"])
    return out


def _chunk(p: DataParams, truth: dict[str, Any], rows: int,
           rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """One chunk of rows: the blanked raw features and the target (from the values before blanking)."""
    x = rng.standard_normal((rows, p.n_features), dtype=np.float32)
    y = x.astype(np.float64) @ np.asarray(truth["coefficients"]) + truth["intercept"]
    cols: dict[str, Any] = {f"x{i}": x[:, i] for i in range(p.n_features)}
    for name, freqs in CATEGORIES.items():
        idx = rng.choice(len(freqs), rows, p=list(freqs.values()))
        cols[name] = pd.array(np.array(list(freqs), dtype=object)[idx], dtype="str")
        y += np.array(list(truth["categorical"][name].values()))[idx]
    member = rng.random(rows) < MEMBER_SHARE
    cols["member"] = pd.array(member, dtype="boolean")
    y += member * truth["boolean"]["member"]["offset"]
    days = rng.integers(0, SIGNUP_DAYS, rows)
    cols["signup"] = (pd.Timestamp(SIGNUP_START, tz="UTC") + pd.to_timedelta(days, unit="D")).as_unit("us")
    y += days * truth["datetime"]["signup"]["per_year"] / YEAR_DAYS
    y += p.noise * rng.standard_normal(rows)
    frame = pd.DataFrame(cols)
    blank = rng.random((rows, frame.shape[1])) < p.missing_rate
    for j, name in enumerate(frame.columns):
        frame[name] = frame[name].mask(blank[:, j])
    return frame, y.astype(np.float32)


def _chunks(p: DataParams, truth: dict[str, Any]) -> Iterator[tuple[slice, pd.DataFrame, np.ndarray]]:
    for c, start in enumerate(range(0, p.n_samples, p.chunk_rows)):
        rows = min(p.chunk_rows, p.n_samples - start)
        frame, y = _chunk(p, truth, rows, np.random.default_rng([p.seed, 2, c]))
        yield slice(start, start + rows), frame, y


def mixed_data(p: DataParams, writers_factory: Any) -> dict[str, Any]:
    """Generate kind mixed into the raw splits; return what meta.json records about it."""
    # a chunk as a frame: numbers, strings (~60 bytes each in pandas), the blanking mask, the table
    rows = min(p.chunk_rows, p.n_samples)
    check_fits("generate", {"one chunk of rows": rows * (24 * p.n_features + 400), "split ids": p.n_samples},
               f"lower data.chunk_rows (now {p.chunk_rows}) or data.n_features (now {p.n_features})")
    rng = np.random.default_rng([p.seed, 1])
    truth = _truth(p, rng)
    split_of = assign_splits(p.n_samples, p.split, rng)
    kinds = column_kinds(p)
    stats, writers = TrainStats(kinds), None
    for sl, frame, y in _chunks(p, truth):
        if writers is None:
            writers = writers_factory(list(kinds), "y", "regression", frame_schema(frame, "y", "regression"))
        stats.add(frame.loc[split_of[sl] == 0])
        write_frame_rows(writers, frame, y, split_of[sl], "y")
    _, variances = _term_means_and_variances(truth)
    truth.update(noise_std=p.noise, missing_rate=p.missing_rate,
                 irreducible={"mse": p.noise**2 + p.missing_rate * sum(variances.values())})
    return {"names": list(kinds), "target": "y", "task": "regression", "classes": None, "ground_truth": truth,
            "split_of": split_of, "labels": None, "columns": stats.columns(p.min_category_count),
            "dropped": {}, "target_missing": 0}
