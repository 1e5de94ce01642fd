"""k-fold cross-validation (evaluate.cv_folds): the folds, the held-out fold kept out of training
and early stopping, the per-fold schema of raw tables, the aggregation, the param errors, and
the evaluate stage end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.core.contracts import Column, Meta
from stages.core.errors import ParamsError
from stages.core.params import parse_params
from stages.evaluation import cv

# ------------------------------------------------------------------------------ the folds


def test_folds_are_disjoint_covering_balanced_and_seeded():
    folds = cv.fold_ids(103, 5, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [20, 20, 21, 21, 21]  # every row in exactly one fold
    assert np.array_equal(folds, cv.fold_ids(103, 5, seed=3))
    assert not np.array_equal(folds, cv.fold_ids(103, 5, seed=4))


def test_stratified_folds_keep_each_class_share():
    labels = np.random.default_rng(1).permutation(np.repeat([0, 1, 2], [70, 23, 7]))
    folds = cv.fold_ids(100, 5, seed=0, labels=labels)
    for c, n_c in ((0, 70), (1, 23), (2, 7)):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n_c, (c, counts)
    assert sorted(np.bincount(folds).tolist()) == [20] * 5


def test_the_held_out_fold_is_never_trained_on_nor_early_stopped_on():
    labels = np.random.default_rng(0).integers(0, 3, 300)
    folds = cv.fold_ids(300, 4, seed=9, labels=labels)
    for fold in range(4):
        rows = cv.fold_rows(folds, fold, 0.2, seed=9, labels=labels)
        held_out = set(np.flatnonzero(folds == fold))
        assert set(rows["test"]) == held_out
        assert not held_out & set(rows["train"]) and not held_out & set(rows["val"])
        assert not set(rows["train"]) & set(rows["val"])
        assert len(rows["train"]) + len(rows["val"]) + len(rows["test"]) == 300
        assert len(rows["val"]) == pytest.approx(0.2 * (300 - len(held_out)), abs=3)  # round() per class
        for c in range(3):  # the inner val is stratified too
            share = np.mean(labels[rows["val"]] == c) - np.mean(labels[np.concatenate([rows["train"], rows["val"]])] == c)
            assert abs(share) < 0.03
        assert np.array_equal(rows["val"], cv.fold_rows(folds, fold, 0.2, seed=9, labels=labels)["val"])


def test_a_fold_trains_without_the_held_out_targets():
    """The held-out fold's targets are NaN: training refuses non-finite targets (loop.check_splits),
    so the fold trains only because none of them reached its train or early-stopping rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=120)).astype(np.float32)
    folds = cv.fold_ids(120, 3, seed=42)
    y[folds == 1] = np.nan
    meta = Meta(task="regression", feature_names=["a", "b", "c"], target="y")
    params = parse_params({"train": {"hidden": [4], "epochs": 2, "batch_size": 32, "device": "cpu"}}).train
    plan = cv.CVPlan(params=params, meta=meta, pool=cv.Pool(y=y, x=x, val_share=0.2), folds=folds,
                     min_category_count=5)
    scores = cv.run_fold(plan, 1)
    assert np.isnan(scores["mse"])  # scored on the held-out (NaN) targets, trained without them
    with pytest.raises(Exception, match="missing or infinite targets"):
        cv.run_fold(plan, 0)  # fold 1's rows are now training rows


def test_a_raw_tables_schema_is_refitted_on_each_folds_training_rows():
    frame = pd.DataFrame({"city": ["a", "b"] * 10 + ["rare"] * 5, "size": [1.0] * 20 + [np.nan] * 5})
    meta = Meta(task="regression", feature_names=["city", "size"], target="y",
                columns=[Column("city", "categorical", 0.0, ["a", "b", "rare"]), Column("size", "numeric", 0.2)])
    pool = cv.Pool(y=np.arange(25, dtype=np.float32), frame=frame, val_share=0.2)
    rows = {"train": np.arange(16), "val": np.arange(16, 20), "test": np.arange(20, 25)}
    splits, fold_meta = cv.fold_data(pool, rows, meta, min_category_count=1)
    city, size = fold_meta.columns
    assert city.vocabulary == ["a", "b"] and size.missing_rate == 0.0  # "rare" and the gaps: held out only
    assert splits["test"].x[:, 0].tolist() == [0.0] * 5  # UNKNOWN: the fold model never saw "rare"
    assert np.isnan(splits["test"].x[:, 1]).all() and not np.isnan(splits["train"].x).any()
    assert meta.columns[0].vocabulary == ["a", "b", "rare"]  # the run's meta is left alone


# ------------------------------------------------------------------------ figures, errors


def test_aggregate_means_stds_and_undefined_folds():
    out = cv.aggregate([{"r2": 0.9, "roc_auc": None}, {"r2": 0.8, "roc_auc": 0.7}, {"r2": 0.7, "roc_auc": 0.9}])
    assert out["r2"]["mean"] == pytest.approx(0.8) and out["r2"]["std"] == pytest.approx(0.1)  # ddof 1
    assert out["r2"]["folds"] == [0.9, 0.8, 0.7]
    assert out["roc_auc"] == {"mean": pytest.approx(0.8), "std": pytest.approx(np.std([0.7, 0.9], ddof=1)),
                              "folds": [None, 0.7, 0.9]}


def test_cv_folds_param_and_data_errors():
    assert parse_params({}).evaluate.cv_folds == 0
    assert parse_params({"evaluate": {"cv_folds": 2}}).evaluate.cv_folds == 2
    with pytest.raises(ParamsError, match="evaluate.cv_folds: 1; cross-validation needs 2 or more folds"):
        parse_params({"evaluate": {"cv_folds": 1}})
    with pytest.raises(ParamsError, match="evaluate.cv_folds"):
        parse_params({"evaluate": {"cv_folds": -1}})
    reg = Meta(task="regression", feature_names=["a"], target="y")
    cv.check_folds(5, np.zeros(10), reg)
    with pytest.raises(ParamsError, match=r"5 folds of 9 train\+val rows .*at most 4"):
        cv.check_folds(5, np.zeros(9), reg)
    cls = Meta(task="classification", feature_names=["a"], target="y", classes=["no", "yes"])
    with pytest.raises(ParamsError, match=r"class 'yes' has 4 train\+val rows.*at most 4"):
        cv.check_folds(5, np.repeat([0, 1], [40, 4]), cls)
    with pytest.raises(ParamsError, match=r"class 'yes' has 1 train\+val rows.*evaluate.cv_folds: 0"):
        cv.check_folds(2, np.repeat([0, 1], [40, 1]), cls)


def test_worker_count_does_not_change_the_figures(tmp_path):
    from stages import generate
    from stages.core.contracts import load_meta

    params = parse_params({"data": {"kind": "classification", "n_samples": 240, "noise": 0.1, "n_classes": 3},
                           "train": {"hidden": [8], "epochs": 3, "batch_size": 32}})
    generate.run(params.data, tmp_path)
    meta = load_meta(tmp_path)
    one = cv.cross_validate(params.train, meta, 3, min_category_count=5, data_dir=tmp_path, workers=1)
    three = cv.cross_validate(params.train, meta, 3, min_category_count=5, data_dir=tmp_path, workers=3)
    assert cv.forks_here(params.train)  # Linux, CPU: the three folds ran in forked processes
    assert one == three
    pool = cv.load_pool(meta, tmp_path)
    plan = cv.CVPlan(params=params.train, meta=meta, pool=pool, min_category_count=5,
                     folds=cv.fold_ids(len(pool), 3, params.train.seed, pool.y))
    with cv.single_torch_thread():
        threads = cv.run_folds(plan, 3, 2, processes=False)
    assert {"k": 3, "n": len(pool), **cv.aggregate(threads)} == one
    assert one["k"] == 3 and one["n"] == meta.rows["train"] + meta.rows["val"] and len(one["accuracy"]["folds"]) == 3
    assert {"accuracy", "log_loss", "f1_macro", "roc_auc", "error_rate"} == set(one) - {"k", "n"}


# ------------------------------------------------------------------------------ the stage


def _run(main, name: str) -> None:
    from stages.core.errors import run_main

    run_main(main, name)


def test_evaluate_stage_with_cv_folds(tmp_path, monkeypatch, capsys):
    from stages import evaluate, generate, train
    from stages.tools.gate_rules import evaluate_rules, lookup, parse_threshold
    from tests.conftest import merged_params

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    small = {"data": {"kind": "friedman", "n_samples": 120, "seed": 5},
             "train": {"hidden": [8], "epochs": 4, "batch_size": 64}}
    Path("params.yaml").write_text(merged_params(yaml.safe_dump(small)))
    for main, name in ((generate.main, "generate"), (train.main, "train"), (evaluate.main, "evaluate")):
        _run(main, name)
    plain = json.loads(Path("metrics/eval.json").read_text())
    assert "cv" not in plain and "Cross-validation" not in Path("reports/fit.md").read_text()

    small["evaluate"] = {"cv_folds": 3}
    Path("params.yaml").write_text(merged_params(yaml.safe_dump(small)))
    _run(evaluate.main, "evaluate")
    report = json.loads(Path("metrics/eval.json").read_text())
    assert {k: v for k, v in report.items() if k != "cv"} == plain  # CV adds its key, changes nothing else
    folds = report["cv"]["r2"]["folds"]
    assert report["cv"]["k"] == 3 and report["cv"]["n"] == 102 and len(folds) == 3
    assert report["cv"]["r2"]["mean"] == pytest.approx(np.mean(folds))
    assert lookup({"eval": report}, "eval.cv.r2.mean") == report["cv"]["r2"]["mean"]
    assert lookup({"eval": report}, "eval.cv.rmse.std") == report["cv"]["rmse"]["std"]
    rules = [parse_threshold("eval.cv.r2.mean >= -100"), parse_threshold("eval.cv.r2.std < 0")]
    assert [row.status for row in evaluate_rules(rules, {"eval": report}).rows] == ["pass", "fail"]
    r2 = report["cv"]["r2"]
    assert (f"3-fold CV on train+val (102 rows, a model retrained per fold): R² {r2['mean']:.3f} ± {r2['std']:.3f} "
            f"(folds {folds[0]:.3f}, {folds[1]:.3f}, {folds[2]:.3f})") in Path("reports/fit.md").read_text()

    small["evaluate"] = {"cv_folds": 60}  # 102 rows: fewer than 2 per fold
    Path("params.yaml").write_text(merged_params(yaml.safe_dump(small)))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _run(evaluate.main, "evaluate")
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fitline evaluate: error: evaluate.cv_folds: 60 folds of 102 train+val rows")
    assert json.loads(Path("metrics/eval.json").read_text()) == report  # the last good metrics are kept
