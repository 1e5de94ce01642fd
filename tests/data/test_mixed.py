"""Synthetic kind mixed: categorical, boolean and date columns with gaps, and a known noise floor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages import generate
from stages.core.params import DataParams
from stages.data import mixed
from stages.data.splits import load_splits, read_split_frame


def _params(**kw) -> DataParams:
    return DataParams(**{"kind": "mixed", "n_samples": 20000, "n_features": 4, "n_informative": 3, "seed": 5, **kw})


def _bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_the_best_prediction_scores_the_recorded_noise_floor(tmp_path):
    """The irreducible MSE counts the noise and what the blanked values hide: the Bayes predictor
    (each missing term replaced by its mean) scores it on the generated rows."""
    meta = generate.run(_params(missing_rate=0.2, noise=0.5), tmp_path)
    truth = meta.ground_truth
    frame = read_split_frame("train", tmp_path)
    resid = frame["y"].to_numpy(np.float64) - mixed.expected_target(frame, truth)
    assert truth["irreducible"]["mse"] > 0.25 * 1.5  # the gaps cost more than the noise here
    assert np.mean(resid**2) == pytest.approx(truth["irreducible"]["mse"], rel=0.05)
    assert truth["noise_std"] == 0.5 and truth["missing_rate"] == 0.2


def test_without_gaps_the_floor_is_the_noise(tmp_path):
    meta = generate.run(_params(missing_rate=0.0, noise=0.5), tmp_path)
    assert meta.ground_truth["irreducible"]["mse"] == 0.25
    frame = read_split_frame("train", tmp_path)
    assert not frame.drop(columns="y").isna().any().any()
    resid = frame["y"].to_numpy(np.float64) - mixed.expected_target(frame, meta.ground_truth)
    assert np.mean(resid**2) == pytest.approx(0.25, rel=0.05)


def test_schema_and_raw_layout(tmp_path):
    meta = generate.run(_params(missing_rate=0.1), tmp_path)
    assert meta.task == "regression" and meta.target == "y" and meta.dropped == {} and meta.target_missing == 0
    assert meta.feature_names == ["x0", "x1", "x2", "x3", "city", "segment", "member", "signup"]
    schema = {c.name: c for c in meta.columns}
    assert [schema[n].kind for n in meta.feature_names] == ["numeric"] * 4 + ["categorical", "categorical",
                                                                               "boolean", "datetime"]
    assert schema["city"].vocabulary == list(mixed.CATEGORIES["city"])  # listed most frequent first
    assert schema["member"].vocabulary == ["False", "True"]
    for c in meta.columns:
        assert c.missing_rate == pytest.approx(0.1, abs=0.015), c.name  # MCAR at data.missing_rate
    train = read_split_frame("train", tmp_path)
    assert {str(t) for t in train.dtypes} == {"float32", "str", "boolean", "datetime64[us, UTC]"}
    x = load_splits(tmp_path)["train"].x
    assert x.shape == (meta.rows["train"], 8) and np.isnan(x[:, 0]).mean() == pytest.approx(0.1, abs=0.015)
    assert json.loads((tmp_path / "meta.json").read_text()) == meta.to_dict()


def test_chunked_and_deterministic(tmp_path):
    p = _params(n_samples=2500, chunk_rows=1000)
    generate.run(p, tmp_path / "a")
    generate.run(p, tmp_path / "b")
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    meta = generate.run(_params(n_samples=2500, chunk_rows=1000, seed=6), tmp_path / "c")
    assert _bytes(tmp_path / "a")["train.parquet"] != _bytes(tmp_path / "c")["train.parquet"]
    assert sum(len(s.y) for s in load_splits(tmp_path / "c").values()) == 2500 == sum(meta.rows.values())
