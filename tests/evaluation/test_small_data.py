"""Small splits: the warning that points at data.split and k-fold CV (stages/evaluation/scoring.py)."""

from __future__ import annotations

import logging

import numpy as np

from stages.core.contracts import Meta
from stages.core.params import EvaluateParams
from stages.evaluation.scoring import SMALL_SPLIT, score_outputs

RNG = np.random.default_rng(0)
META = Meta(task="regression", feature_names=["a"], target="y")


def scored(sizes: dict[str, int], caplog) -> list[str]:
    targets = {n: RNG.standard_normal(k) for n, k in sizes.items()}
    outputs = {n: y + 0.1 * RNG.standard_normal(len(y)) for n, y in targets.items()}
    history = [{"epoch": 1, "train_loss": 0.01, "val_loss": 0.01}]
    with caplog.at_level(logging.WARNING, logger="stages.evaluation.scoring"):
        score_outputs(EvaluateParams(), outputs, targets, META, history)
    return [r.getMessage() for r in caplog.records if "rows: one row moves" in r.getMessage()]


def test_a_split_under_100_rows_is_named_with_the_keys_that_help(caplog):
    warnings = scored({"train": 700, "val": 150, "test": SMALL_SPLIT - 1}, caplog)
    assert len(warnings) == 1
    assert "the test split has 99 rows: one row moves its metrics by 1.0 points" in warnings[0]
    assert "data.split" in warnings[0] and "evaluate.cv_folds" in warnings[0]


def test_splits_of_100_rows_or_more_say_nothing(caplog):
    assert scored({"train": 700, "val": SMALL_SPLIT, "test": SMALL_SPLIT}, caplog) == []
