"""Bootstrap intervals of the test metrics on large splits: the resampled means' normal limit
(stages/evaluation/metrics.py resampled_means) against resampling the rows."""

from __future__ import annotations

import numpy as np
import pytest

from stages.evaluation.metrics import bootstrap_ci

RNG = np.random.default_rng(7)
N = 20_000


def agree(limit: dict, rows: dict) -> None:
    assert limit.keys() == rows.keys()
    for metric in rows:
        width = rows[metric]["high"] - rows[metric]["low"]
        assert width > 0
        for end in ("low", "high"):  # within a tenth of the interval's width (Monte Carlo noise)
            assert limit[metric][end] == pytest.approx(rows[metric][end], abs=0.1 * width), (metric, end)


def test_the_normal_limit_matches_resampling_rows_for_regression():
    y = RNG.standard_normal(N) * 3
    pred = y + RNG.standard_t(4, N)  # heavy-tailed errors: the squared errors are far from normal
    agree(bootstrap_ci("regression", y, pred, resample_rows=5_000),
          bootstrap_ci("regression", y, pred, resample_rows=10 * N))


def test_the_normal_limit_matches_resampling_rows_for_classification():
    labels = RNG.integers(0, 3, N)
    logits = RNG.standard_normal((N, 3))
    logits[np.arange(N), labels] += 1.0
    agree(bootstrap_ci("classification", labels, logits, resample_rows=5_000),
          bootstrap_ci("classification", labels, logits, resample_rows=10 * N))


def test_small_splits_still_resample_rows_and_stay_seeded():
    y = RNG.standard_normal(300)
    pred = y + RNG.standard_normal(300)
    default = bootstrap_ci("regression", y, pred)
    assert default == bootstrap_ci("regression", y, pred, resample_rows=10**9)  # the row resampling
    assert default == bootstrap_ci("regression", y, pred)
    big = RNG.standard_normal(60_000)
    noisy = big + 1 + RNG.standard_normal(60_000)
    assert bootstrap_ci("regression", big, noisy) == bootstrap_ci("regression", big, noisy)  # normal limit too
