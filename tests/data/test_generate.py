"""The generate stage: synthetic ground truth, splits, file ingest, determinism, atomicity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest

from stages import generate
from stages.core import contracts
from stages.core.errors import DataError
from stages.core.params import DataKind, DataParams
from stages.data import ingest, synthetic
from stages.data.splits import load_splits


def _params(**kw) -> DataParams:
    base = {"n_samples": 400, "n_features": 6, "n_informative": 3, "seed": 3}
    base.update(kw)
    return DataParams(**base)


def _bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("kind", ["linear", "friedman", "classification"])
def test_shapes_dtypes_and_meta(tmp_path, kind):
    noise = 0.1 if kind == "classification" else 1.0
    meta = generate.run(_params(kind=kind, noise=noise, n_classes=3), tmp_path)
    frames = {s: pd.read_parquet(tmp_path / f"{s}.parquet") for s in contracts.SPLITS}
    assert [len(frames[s]) for s in contracts.SPLITS] == [280, 60, 60]
    assert meta.rows == {"train": 280, "val": 60, "test": 60}
    for df in frames.values():
        assert list(df.columns) == [f"x{i}" for i in range(6)] + ["y"]
        assert all(df[f"x{i}"].dtype == np.float32 for i in range(6))
        assert df["y"].dtype == (np.int64 if kind == "classification" else np.float32)
    assert meta.feature_names == [f"x{i}" for i in range(6)]
    assert meta.task == ("classification" if kind == "classification" else "regression")
    assert json.loads((tmp_path / "meta.json").read_text()) == meta.to_dict()


def test_same_params_give_byte_identical_files_and_seed_changes_them(tmp_path):
    p = _params(kind="classification", noise=0.1, chunk_rows=1000, n_samples=2500)
    generate.run(p, tmp_path / "a")
    generate.run(p, tmp_path / "b")
    generate.run(_params(kind="classification", noise=0.1, chunk_rows=1000, n_samples=2500, seed=4), tmp_path / "c")
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert _bytes(tmp_path / "a")["train.parquet"] != _bytes(tmp_path / "c")["train.parquet"]


def test_chunked_generation_covers_every_row(tmp_path):
    meta = generate.run(_params(kind="linear", n_samples=2345, chunk_rows=1000), tmp_path)
    splits = load_splits(tmp_path)
    assert sum(len(s.y) for s in splits.values()) == 2345 == sum(meta.rows.values())
    # chunks draw from distinct streams: no repeated rows at chunk boundaries
    x = np.concatenate([s.x for s in splits.values()])
    assert len(np.unique(x, axis=0)) == 2345


def test_least_squares_recovers_true_linear_coefficients(tmp_path):
    meta = generate.run(_params(kind="linear", n_samples=20000, n_features=8, n_informative=3, noise=0.5), tmp_path)
    s = load_splits(tmp_path)["train"]
    design = np.c_[s.x, np.ones(len(s.x))].astype(np.float64)
    fit, *_ = np.linalg.lstsq(design, s.y.astype(np.float64), rcond=None)
    truth = meta.ground_truth
    np.testing.assert_allclose(fit[:-1], truth["coefficients"], atol=0.02)
    assert fit[-1] == pytest.approx(truth["intercept"], abs=0.02)
    assert sum(c != 0 for c in truth["coefficients"]) == 3
    # the residual of the true model is the noise: its MSE matches the recorded irreducible error
    resid = s.y - (s.x.astype(np.float64) @ truth["coefficients"] + truth["intercept"])
    assert truth["irreducible"]["mse"] == pytest.approx(0.25)
    assert np.mean(resid**2) == pytest.approx(0.25, rel=0.05)


def test_friedman_irreducible_error_is_the_noise_variance(tmp_path):
    meta = generate.run(_params(kind="friedman", n_samples=20000, noise=2.0), tmp_path)
    s = load_splits(tmp_path)["train"]
    resid = s.y - synthetic.friedman1(s.x)
    assert meta.ground_truth["irreducible"]["mse"] == 4.0
    assert np.mean(resid**2) == pytest.approx(4.0, rel=0.05)


def test_classification_bayes_accuracy_matches_label_noise(tmp_path):
    # classes far apart: the only error left is the label flips, (K-1)/K of which change the label
    meta = generate.run(_params(kind="classification", n_classes=4, noise=0.2, class_sep=40.0,
                                n_samples=20000), tmp_path)
    irr = meta.ground_truth["irreducible"]
    assert irr["accuracy"] == pytest.approx(0.8 + 0.2 / 4, abs=1e-6)
    # and the Bayes classifier's accuracy on the data agrees with the recorded value
    s = load_splits(tmp_path)["train"]
    post = synthetic.class_posterior(s.x, meta.ground_truth, 0.2)
    assert np.mean(post.argmax(1) == s.y) == pytest.approx(irr["accuracy"], abs=0.015)


def test_classification_splits_are_stratified_and_imbalance_kept(tmp_path):
    meta = generate.run(_params(kind="classification", n_classes=3, noise=0.0,
                                class_weights=[0.6, 0.3, 0.1], n_samples=3000), tmp_path)
    counts = {s: np.asarray(c) for s, c in meta.class_counts.items()}
    total = sum(counts.values())
    assert total / total.sum() == pytest.approx([0.6, 0.3, 0.1], abs=0.03)
    for split, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        # stratified: each class is split in the global proportions, to the row
        assert np.all(np.abs(counts[split] - total * frac) <= 1)


def test_splits_are_disjoint(tmp_path):
    generate.run(_params(kind="friedman", n_samples=1000), tmp_path)
    keys = {s: {r.tobytes() for r in sp.x} for s, sp in load_splits(tmp_path).items()}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])


# ----------------------------------------------------------------------------------- file


def _user_frame(n=90):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "area_sqft": rng.uniform(500, 4000, n),
        "ratio": rng.uniform(0, 1, n),
        "rooms": rng.integers(1, 6, n),
        "label": rng.choice(["cheap", "mid", "pricey"], n),
        "price": rng.normal(3e5, 5e4, n),
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_ingest_classification_maps_string_labels(tmp_path, suffix):
    df = _user_frame().drop(columns="price")
    path = tmp_path / f"user{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    meta = generate.run(DataParams(source="file", path=str(path), target="label"), tmp_path / "out")
    assert meta.task == "classification"
    assert meta.classes == ["cheap", "mid", "pricey"]
    assert meta.feature_names == ["area_sqft", "ratio", "rooms"]
    assert meta.ground_truth is None
    train = pd.read_parquet(tmp_path / "out/train.parquet")
    assert list(train.columns) == ["area_sqft", "ratio", "rooms", "label"]
    assert set(train["label"]) <= {0, 1, 2}
    total = sum(meta.rows.values())
    assert total == 90
    # labels survive the round trip: index -> name gives back the original counts
    original = df["label"].value_counts().to_dict()
    ingested = np.sum([meta.class_counts[s] for s in contracts.SPLITS], axis=0)
    assert dict(zip(meta.classes, ingested.tolist())) == original


@pytest.mark.parametrize("task", ["auto", "classification"])
def test_a_target_with_one_class_is_refused(tmp_path, task):
    """A file whose target is always 1 trained a 'good' model (cross-entropy 0) that passed the gate."""
    path = tmp_path / "user.csv"
    _user_frame().drop(columns="label").assign(price=1).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"^data.target: column 'price' has one class \(1\) in 90 rows; a classifier "
                                        r"needs at least two \(for a numeric target set data.task: regression\)$"):
        generate.run(DataParams(source="file", path=str(path), target="price", task=task), tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_file_ingest_regression_inferred(tmp_path):
    path = tmp_path / "user.csv"
    _user_frame().drop(columns="label").to_csv(path, index=False)
    meta = generate.run(DataParams(source="file", path=str(path), target="price"), tmp_path / "out")
    assert meta.task == "regression" and meta.classes is None
    assert meta.target == "price"


def test_file_ingest_records_the_file_hash_and_warns_outside_data_raw(tmp_path, caplog):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    inside, outside = raw / "user.csv", tmp_path / "elsewhere.csv"
    _user_frame().drop(columns="label").to_csv(inside, index=False)
    outside.write_bytes(inside.read_bytes())
    assert ingest.warn_if_untracked(inside, raw) is False
    with caplog.at_level("WARNING", logger="stages.data.ingest"):
        assert ingest.warn_if_untracked(outside, raw) is True
    assert "outside" in caplog.text and "will not re-run generate" in caplog.text
    meta = generate.run(DataParams(source="file", path=str(inside), target="price"), tmp_path / "out")
    assert meta.source_sha256 == hashlib.sha256(inside.read_bytes()).hexdigest()
    inside.write_text(inside.read_text() + "1000,0.5,2,250000\n")
    assert generate.run(DataParams(source="file", path=str(inside), target="price"),
                        tmp_path / "out").source_sha256 != meta.source_sha256


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"\x00garbage"), "cannot read"),
        (lambda p: pd.DataFrame({"id": [f"u{i}" for i in range(30)], "price": range(30)}).to_parquet(p),
         r"no usable feature columns \(left out: 'id' \(id-like: 30 distinct values in 30 rows"),
        (lambda p: _user_frame().drop(columns="price").drop(columns="label").to_parquet(p), "column 'price' not in"),
    ],
)
def test_file_ingest_errors(tmp_path, setup, fragment):
    path = tmp_path / "user.parquet"
    setup(path)
    with pytest.raises(DataError, match=fragment):
        generate.run(DataParams(source="file", path=str(path), target="price"), tmp_path / "out")


def test_rows_without_a_label_are_dropped_and_counted(tmp_path):
    """They were an error; a table with a few unlabelled rows is normal data."""
    df = _user_frame().drop(columns="price")
    df.loc[[3, 7], "label"] = None
    df.to_parquet(tmp_path / "u.parquet")
    meta = generate.run(DataParams(source="file", path=str(tmp_path / "u.parquet"), target="label"), tmp_path / "o")
    assert meta.target_missing == 2 and sum(meta.rows.values()) == 88
    assert meta.classes == ["cheap", "mid", "pricey"]


def test_failed_run_keeps_the_previous_good_files(tmp_path):
    out = tmp_path / "out"
    generate.run(_params(kind="friedman"), out)
    before = _bytes(out)
    (tmp_path / "bad.csv").write_text("a,b\nx,1\n")
    with pytest.raises(DataError):
        generate.run(DataParams(source="file", path=str(tmp_path / "bad.csv"), target="b"), out)
    assert _bytes(out) == before, "a failed run must not touch good artifacts nor leave temp files"


def test_infer_task():
    assert ingest.infer_task(pd.Series([0.5, 1.2, 3.3])) == "regression"
    assert ingest.infer_task(pd.Series([0, 1, 1, 0])) == "classification"
    assert ingest.infer_task(pd.Series(["a", "b"])) == "classification"
    assert ingest.infer_task(pd.Series([True, False])) == "classification"
    assert ingest.infer_task(pd.Series(range(100))) == "regression"


def test_a_header_only_user_file_says_no_rows(tmp_path):
    """It was called 'feature columns must be numeric' (empty columns read as text)."""
    path = tmp_path / "user.csv"
    path.write_text("area,rooms,price\n")
    with pytest.raises(DataError, match=r"user\.csv: no rows \(only a header with 3 column\(s\)\)"):
        generate.run(DataParams(source="file", path=str(path), target="price"), tmp_path / "out")


# ------------------------------------------------------------------ the numeric layout's bytes

# the last revision before the data stage learned raw tables: the default run must still write
# exactly its bytes (the numeric kinds keep the float32 layout and a meta.json without a schema)
BASELINE_REV = "e081b04"
_RUN_DEFAULT = ("import sys; from stages import generate; from stages.core.params import DataParams; "
                "generate.run(DataParams(), sys.argv[1])")


def test_default_run_is_byte_identical_to_the_baseline_revision(tmp_path):
    root = Path(__file__).resolve().parents[2]
    archive = subprocess.run(["git", "archive", "--format=tar", BASELINE_REV, "stages"], cwd=root, capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"revision {BASELINE_REV} is not in this checkout's history")
    base = tmp_path / "base"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(base, filter="data")
    env = {**os.environ, "PYTHONPATH": str(base)}
    subprocess.run([sys.executable, "-c", _RUN_DEFAULT, str(tmp_path / "before")], cwd=base, env=env, check=True)
    meta = generate.run(DataParams(), tmp_path / "after")
    assert meta.columns is None and "columns" not in json.loads((tmp_path / "after/meta.json").read_text())
    assert _bytes(tmp_path / "after") == _bytes(tmp_path / "before")


def test_every_synthetic_kind_has_a_generator():
    assert tuple(generate.SYNTHETIC) == get_args(DataKind)
