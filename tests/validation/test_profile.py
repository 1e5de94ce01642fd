"""The column profile that checks the features of a wide split (stages.validation.profile): when
it is used, that its statistics are GX's, that it reports what the per-column suite reports for
the same data, and that a wide table still names each failing column.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from stages import generate, validate
from stages.core.contracts import SPLITS
from stages.core.params import DataParams, ValidateParams
from stages.data.splits import split_path
from stages.validation import gx as gx_checks
from stages.validation import profile
from stages.validation.expectations import ColumnReference
from stages.validation.report import failure_message
from tests.validation.test_validate import copies, failed

PARAMS = ValidateParams()

# ------------------------------------------------------------------------- decision logic


def test_only_wide_splits_are_profiled_and_only_their_numeric_features() -> None:
    frame = pd.DataFrame({
        "f32": np.zeros(3, np.float32), "f64": np.zeros(3), "i8": np.zeros(3, np.int8),
        "u64": np.zeros(3, np.uint64), "flag": [True, False, True], "text": ["a", "b", "c"],
        "nullable": pd.array([1, None, 3], dtype="Int64"), "y": np.zeros(3)})
    features = ["f32", "f64", "i8", "u64", "flag", "text", "nullable", "gone"]
    assert profile.profiled_columns(frame, features, wide_columns=3) == ["f32", "f64", "i8", "u64"]
    assert profile.profiled_columns(frame, features, wide_columns=4) == []  # 4 numeric: narrow
    assert profile.profiled_columns(frame.iloc[:0], features, wide_columns=0) == []  # row counts say it


def test_failures_come_in_suite_order() -> None:
    def f(check: str, column: str | None) -> dict:
        return {"check": check, "column": column}

    mixed = [f("drift_std", "a"), f("labels", "y"), f("nulls", "b"), f("range", "y"), f("min_rows", None),
             f("drift_mean", "a"), f("schema", "b"), f("dtype", "b")]
    assert [(x["check"], x["column"]) for x in profile.in_suite_order(mixed, ["a", "b", "y"])] == [
        ("schema", "b"), ("min_rows", None), ("drift_mean", "a"), ("drift_std", "a"),
        ("dtype", "b"), ("nulls", "b"), ("range", "y"), ("labels", "y")]


def test_profile_statistics_are_the_ones_gx_computes() -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.standard_normal((50, 4)).astype(np.float32) * 3, columns=["a", "b", "c", "d"])
    frame.loc[[1, 2], "a"] = np.nan
    frame.loc[5, "b"] = np.inf
    frame["d"] = rng.integers(-9, 9, 50)
    refs = {c: ColumnReference(-2.0, 2.0, "params", 0.0, 3.0, 3.0, 100) for c in "abd"}  # c: no reference
    bounds = profile.profile_bounds(list(frame.columns), refs, len(frame), PARAMS, drift=True)
    got = profile.column_profile(frame, bounds)
    cast = gx_checks.gx_frame(frame)
    assert got["dtype"].tolist() == ["float64", "float64", "float64", "int64"]
    assert got["nulls"].tolist() == [2, 0, 0, 0]
    for col in "abd":  # non-null values outside [-2, 2], inf included
        values = cast[col]
        assert got.loc[col, "outside_range"] == int((values.notna() & ((values < -2) | (values > 2))).sum())
    # pandas' mean and std of the float64 column, as GX's pandas engine takes them, to the bit
    with np.errstate(invalid="ignore"):  # the std of a column holding inf is NaN
        want_mean, want_std = [cast[c].mean() for c in "abd"], [cast[c].std() for c in "abd"]
    np.testing.assert_array_equal(got.loc[list("abd"), "mean"].to_numpy(float), want_mean)
    np.testing.assert_array_equal(got.loc[list("abd"), "std"].to_numpy(float), want_std)
    assert np.isnan(got.loc["c", ["outside_range", "mean", "std", "mean_low"]].astype(float)).all()  # not checked
    assert profile.profile_checks(got) == 4 + 4 + 3 + 2 * 3
    # a block of one column at a time gives the same profile
    pd.testing.assert_frame_equal(profile.column_profile(frame, bounds, max_bytes=1), got)


# ------------------------------------------------------------- the same report as per column


def _corrupt(kind: str, frames: dict[str, pd.DataFrame]) -> None:
    """A few corruptions per kind, on different columns (they do not interact)."""
    train, val, test = frames["train"], frames["val"], frames["test"]
    if kind == "values":
        val.loc[[3, 7], "x1"] = np.nan             # nulls
        val.loc[5, "x2"] = np.inf                  # range (infinite), drift of a non-finite column
        val.loc[[2, 4], "x2"] = np.nan
        test["x3"] = test["x3"] + 5.0              # range and drift_mean
        test["x4"] = np.float32(np.nan)            # all null: nulls, and a NaN mean and std
    elif kind == "drift":
        val["x0"] += np.float32(0.8 * train["x0"].std())
        x = test["x3"]
        test["x3"] = x.mean() + (x - x.mean()) * np.float32(0.3)
        val["x2"] = np.float32(0.5)                # constant: std 0
    elif kind == "types":
        test["x0"] = test["x0"].astype(bool)       # a bool feature keeps its GX expectation
        train["x1"] = (train["x1"] * 10).astype(np.int32)  # int values: bounds, sample, drift
        frames["test"] = test.drop(columns=["x2"])  # schema; its column checks skipped


CAUGHT = {
    "clean": set(),
    "values": {("val", "nulls", "x1"), ("val", "nulls", "x2"), ("val", "range", "x2"), ("val", "drift_mean", "x2"),
               ("val", "drift_std", "x2"), ("test", "range", "x3"), ("test", "drift_mean", "x3"),
               ("test", "nulls", "x4"), ("test", "drift_mean", "x4"), ("test", "drift_std", "x4")},
    "drift": {("val", "drift_mean", "x0"), ("val", "drift_std", "x2"), ("test", "drift_std", "x3")},
    # train's x1 scaled to 0..9: val's and test's x1 drift from it
    "types": {("test", "dtype", "x0"), ("test", "schema", "x2"), ("val", "drift_mean", "x1"),
              ("val", "drift_std", "x1"), ("test", "drift_mean", "x1"), ("test", "drift_std", "x1")},
}


@pytest.mark.parametrize("kind", list(CAUGHT))
def test_profile_reports_what_the_per_column_suite_reports(kind: str, regression: tuple) -> None:
    meta, frames = regression
    frames = copies(frames)
    _corrupt(kind, frames)
    per_column = validate.run(PARAMS, copies(frames), meta)
    profiled = validate.run(PARAMS, copies(frames), meta, wide_columns=0)
    assert failed(per_column) == failed(profiled) == CAUGHT[kind]
    for split in SPLITS:
        want, got = per_column["splits"][split], profiled["splits"][split]
        assert got["checks"] == want["checks"]
        assert [f["expectation"] for f in got["failed"]] == [
            f["expectation"] + (" (column profile)" if f["column"] in meta.feature_names
                                and f["check"] in profile.PER_COLUMN and f["column"] in frames[split]
                                and frames[split][f["column"]].dtype.kind in "fiu" else "")
            for f in want["failed"]]
        strip = [{k: v for k, v in f.items() if k != "expectation"} for f in got["failed"]]
        assert strip == [{k: v for k, v in f.items() if k != "expectation"} for f in want["failed"]]
    assert failure_message(profiled, "r.json") == failure_message(per_column, "r.json")


def test_profile_reports_classification_features_like_the_suite(classes: tuple) -> None:
    meta, frames = classes
    frames = copies(frames)
    frames["val"].loc[4, "y"] = 7                      # labels: the target keeps its own expectations
    frames["test"]["x1"] = frames["test"]["x1"] * 3    # drift_std on a feature
    want = validate.run(PARAMS, copies(frames), meta)
    got = validate.run(PARAMS, copies(frames), meta, wide_columns=0)
    assert failed(got) == failed(want) == {("val", "labels", "y"), ("test", "drift_std", "x1")}
    assert failure_message(got, "r.json") == failure_message(want, "r.json")
    assert {s: v["checks"] for s, v in got["splits"].items()} == {s: v["checks"] for s, v in want["splits"].items()}


# --------------------------------------------------------------------------- a wide table

WIDE = 300


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("wide")
    meta = generate.run(DataParams(kind="friedman", n_samples=600, n_features=WIDE, seed=4), out)
    # the frames read_split_frame gives, read at once (it reads a column at a time, slower)
    return meta, {s: pd.read_parquet(split_path(s, out)) for s in SPLITS}


def test_wide_table_names_each_failing_column(wide: tuple, tmp_path) -> None:
    meta, frames = wide
    assert WIDE > profile.WIDE_COLUMNS  # the profile path, by default
    frames = copies(frames)
    train_std = frames["train"]["x17"].std()
    frames["val"]["x17"] += np.float32(0.8 * train_std)           # shifted: drift_mean
    frames["val"].loc[[3, 8], "x123"] = np.nan                    # NaN: nulls
    frames["test"]["x250"] = frames["test"]["x250"] + 5.0          # out of range (and its mean)
    frames["test"].loc[0, "x42"] = -np.inf                        # infinite: range, mean, std
    frames["test"]["x299"] = frames["test"]["x299"].astype(str)    # wrong dtype
    x = frames["val"]["x200"]
    frames["val"]["x200"] = x.mean() + (x - x.mean()) * np.float32(0.3)  # rescaled: drift_std
    context = gx_checks.make_context(tmp_path / "docs")
    report = validate.run(PARAMS, frames, meta, context)
    assert failed(report) == {
        ("val", "drift_mean", "x17"), ("val", "nulls", "x123"), ("val", "drift_std", "x200"),
        ("test", "range", "x42"), ("test", "drift_mean", "x42"), ("test", "drift_std", "x42"),
        ("test", "range", "x250"), ("test", "drift_mean", "x250"), ("test", "dtype", "x299")}
    lines = failure_message(report, "r.json").splitlines()[1:]
    assert [line.split(":")[0:2] for line in lines] == [  # val first, columns in order, table order kept
        ["  val", " drift_mean [x17]"], ["  val", " nulls [x123]"], ["  val", " drift_std [x200]"],
        ["  test", " range [x42]"], ["  test", " drift_mean [x42]"], ["  test", " drift_std [x42]"],
        ["  test", " range [x250]"], ["  test", " drift_mean [x250]"], ["  test", " dtype [x299]"]]
    assert "val: nulls [x123]: expected no nulls (NaN or None); observed 2 of 90 values null" in "\n".join(lines)
    assert "1 of them infinite (inf)" in next(line for line in lines if "range [x42]" in line)
    assert "observed dtype str" in lines[-1]
    by = {(f["split"], f["check"], f["column"]): f for s in report["splits"].values() for f in s["failed"]}
    assert by[("val", "nulls", "x123")]["expectation"] == "expect_column_values_to_not_be_null (column profile)"
    assert by[("test", "dtype", "x299")]["expectation"] == "expect_column_values_to_be_in_type_list"
    # every check of every column is counted, as the per-column suite would count it
    assert report["splits"]["train"]["checks"] == 3 + 3 * WIDE + 3
    assert report["splits"]["val"]["checks"] == 3 + 5 * WIDE + 3
    # Data Docs: the per-split suites and the column profiles
    context.build_data_docs()
    pages = {p.stem for p in (tmp_path / "docs" / "expectations").glob("*.html")}
    assert {"train", "val column profile", "test column profile", "leakage"} <= pages
