"""Tables that look like what people bring: mixed types, gaps, odd names, ids, duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MESSY_ROWS = 240  # before the duplicated rows
MESSY_DUPLICATES = 6
MESSY_TARGET_GAPS = 5


def messy_frame(n: int = MESSY_ROWS, seed: int = 0) -> pd.DataFrame:
    """A housing-like table as a CSV export would hold it (see messy_csv)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    age[rng.random(n) < 0.1] = np.nan
    income = rng.lognormal(10.5, 0.5, n)
    income[[3, 50, 120]] = [9.9e7, 1.2e8, -5.0]  # outliers, kept: validate reports them
    income[rng.random(n) < 0.05] = np.nan
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]).astype(object)
    plan[[7, 8, 9]] = "legacy"  # 3 rows: fewer than min_category_count in train, pooled out
    plan[rng.random(n) < 0.08] = ""  # an empty cell
    active = rng.random(n) < 0.6
    active_col = np.where(rng.random(n) < 0.1, None, active).astype(object)
    days = rng.integers(0, 1500, n)
    stamps = pd.Timestamp("2019-06-01") + pd.to_timedelta(days, unit="D")
    # two formats in one column, as files stitched from two exports have; ISO and US m/d/Y
    signup = np.where(np.arange(n) % 2 == 0, stamps.strftime("%Y-%m-%d"), stamps.strftime("%m/%d/%Y")).astype(object)
    signup[rng.random(n) < 0.05] = None
    price = (5e4 + 40 * np.abs(np.nan_to_num(income, nan=4e4)) ** 0.8 + 900 * np.nan_to_num(age, nan=40)
             + rng.normal(0, 5e3, n))
    df = pd.DataFrame({
        "customer id": [f"C-{i:05d}" for i in range(n)],
        "Age": age,
        "income ($)": income,
        "plan": plan,
        "active": active_col,
        "signup date": signup,
        "город": rng.choice(["Москва", "Казань", "Сочи"], n),
        "rooms": rng.integers(1, 6, n),
        "prediction": rng.normal(0, 1, n),  # a user column that happens to share predict's output name
        "notes": [None] * n,
        "price": price,
    })
    df.loc[[20, 60, 100, 140, 200][:MESSY_TARGET_GAPS], "price"] = np.nan
    # exact duplicate rows (ids included), kept: validate reports them
    return pd.concat([df, df.iloc[10 : 10 + MESSY_DUPLICATES]], ignore_index=True)


@pytest.fixture
def messy_csv(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "houses.csv"
    path.parent.mkdir()
    messy_frame().to_csv(path, index=False)
    return path
