"""Validation of raw columns (meta.json `columns`: user tables, the mixed kind): a messy but sound
table passes, what it holds by nature (gaps, outliers, duplicate rows) at most warns, and each
corruption fails naming its column and the param that relaxes the check; the decisions (allowances,
expected unseen and shared shares, robust bounds) tested directly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import validate
from stages.core.contracts import Column
from stages.core.params import ValidateParams
from stages.validation import duplicates, raw
from stages.validation.raw_checks import profile_expectations
from stages.validation.report import failure_message
from tests.conftest import SMALL_PARAMS, make_pipeline_repo, run_cmd
from tests.data.conftest import messy_frame
from tests.validation.conftest import generate_file
from tests.validation.test_validate import copies, failed

PARAMS = ValidateParams()


def warned(report: dict) -> set[tuple[str, str, str | None]]:
    sections = [*report["splits"].values(), *report["cross_split"].values()]
    return {(w["split"], w["check"], w["column"]) for s in sections for w in s.get("warnings", [])}


def lines(report: dict) -> list[str]:
    return failure_message(report, "r.json").splitlines()[1:]


# ------------------------------------------------------------------------------ the messy table


def test_messy_table_passes_and_warns_about_its_outliers_and_duplicates(messy: tuple) -> None:
    meta, frames = messy
    report = validate.run(PARAMS, copies(frames), meta)
    assert failed(report) == set(), lines(report)
    assert report["success"] is True and report["layout"] == "raw"
    # income 9.9e7 / 1.2e8 and the prices they make: a row or two outside the robust bounds
    assert ("val", "range", "income ($)") in warned(report) and ("val", "range", "price") in warned(report)
    warning = next(w for w in report["splits"]["val"]["warnings"] if w["column"] == "price")
    assert warning["severity"] == "warning" and warning["param"] == "validate.outlier_tol"
    assert warning["observed"] == "1 of 90 values outside (1.1%), e.g. 116361600.0"
    # the file's own duplicate rows land in two splits by chance: tolerated, and said
    assert ("all", "leakage", "rows (9 columns)") in warned(report)
    assert report["warnings"] == len(warned(report))
    kinds = {c: r["kind"] for c, r in report["reference"].items()}
    assert kinds["plan"] == "categorical" and kinds["signup date"] == "datetime" and kinds["price"] == "numeric"
    assert report["splits"]["val"]["checks"] > report["splits"]["train"]["checks"] > 3
    json.dumps(report, allow_nan=False)


def _nan_half(f: dict) -> None:
    test = f["test"]
    test.loc[test.index[::2], "Age"] = np.nan


def _unseen(f: dict) -> None:
    val = f["val"]
    val.loc[val.index[:27], "plan"] = "platinum"  # 30% of val


def _mass_shift(f: dict) -> None:
    val = f["val"]
    val["prediction"] = val["prediction"] + 10 * f["train"]["prediction"].std()


def _inf(f: dict) -> None:
    f["val"].loc[f["val"].index[4], "prediction"] = np.inf


def _copied_rows(f: dict) -> None:
    f["test"] = pd.concat([f["train"].iloc[:30], f["test"].iloc[30:]], ignore_index=True)


def _string(f: dict) -> None:
    f["test"]["rooms"] = f["test"]["rooms"].astype(str)


@pytest.mark.parametrize(("corrupt", "failure", "param", "said"), [
    (_nan_half, ("test", "missing", "Age"), "validate.missing_rate_tol", "observed 51.1% missing (46 of 90 rows)"),
    (_unseen, ("val", "unseen", "plan"), "validate.unseen_tol", "in unseen categories, e.g. 'platinum'"),
    (_mass_shift, ("val", "range", "prediction"), "validate.outlier_tol", "90 of 90 values outside (100.0%)"),
    (_inf, ("val", "range", "prediction"), None, "1 infinite (inf) value(s)"),
    (_copied_rows, ("all", "leakage", "rows (9 columns)"), "validate.leakage_tol", "rows of test in train"),
    (_string, ("test", "dtype", "rooms"), None, "dtype str"),
], ids=["nan", "unseen", "mass_shift", "inf", "copied_rows", "string"])
def test_each_corruption_fails_naming_its_column(messy: tuple, corrupt, failure, param, said) -> None:
    meta, frames = messy
    frames = copies(frames)
    corrupt(frames)
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {failure}, lines(report)
    (line,) = lines(report)
    split, check, column = failure
    assert line.strip().startswith(f"{split}: {check} [{column}]: expected ")
    assert said in line
    assert line.endswith(f"({param})") if param else "(validate." not in line
    json.dumps(report, allow_nan=False)


def test_a_few_outliers_warn_and_many_fail(messy: tuple) -> None:
    meta, frames = messy
    frames = copies(frames)
    val = frames["val"]
    val.loc[val.index[:2], "Age"] = 500.0  # 2 of 82 ages
    report = validate.run(PARAMS, frames, meta)
    assert report["success"] and ("val", "range", "Age") in warned(report)
    val.loc[val.index[:20], "Age"] = 500.0  # a quarter of them: not outliers, a fault
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "range", "Age")}
    assert ("val", "range", "Age") not in warned(report)
    # outlier_tol relaxes it
    assert validate.run(ValidateParams(outlier_tol=0.3), frames, meta)["success"]


def test_category_shares_drift_fails(messy: tuple) -> None:
    meta, frames = messy
    frames = copies(frames)
    val = frames["val"]
    val.loc[val["plan"].isin(["plus", "pro"]), "plan"] = "basic"  # basic ~50% -> ~90%
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "category_shares", "plan")}
    assert "'basic'" in report["splits"]["val"]["failed"][0]["observed"]


def test_numeric_drift_inside_the_bounds_fails(messy: tuple) -> None:
    meta, frames = messy
    frames = copies(frames)
    frames["test"]["prediction"] = frames["test"]["prediction"] + 0.8  # 0.8 std: inside the range bounds
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("test", "drift_mean", "prediction")}
    assert lines(report)[0].endswith("(validate.drift_mean_tol)")


# ------------------------------------------------------------------------- duplicate rows


def test_a_table_of_mostly_duplicate_rows_passes(tmp_path_factory: pytest.TempPathFactory) -> None:
    rng = np.random.default_rng(3)
    n = 600
    frame = pd.DataFrame({c: rng.choice(levels, n) for c, levels in
                          {"colour": ["red", "green"], "size": ["S", "M", "L"], "shape": ["round", "square"],
                           "grade": ["a", "b"]}.items()})
    frame["bought"] = np.where((frame["colour"] == "red") ^ (rng.random(n) < 0.1), "yes", "no")
    meta, frames = generate_file(tmp_path_factory, "coarse", frame, "bought")
    report = validate.run(PARAMS, frames, meta)
    assert report["success"], lines(report)
    shared = {r["pair"]: r for r in report["cross_split"]["leakage"]["shared_rows"]}
    assert shared["val in train"]["expected"] > 0.9 and shared["val in train"]["shared_share"] > 0.9
    assert ("all", "leakage", "rows (5 columns)") in warned(report)


def test_repeated_share_and_shared_rows() -> None:
    assert duplicates.repeated_share(np.array([1, 1, 2, 3])) == 0.5
    assert duplicates.repeated_share(np.array([], np.uint64)) == 0.0
    train = np.r_[np.arange(100), np.arange(10)]  # 20 of 110 rows repeat another: 0.18
    hashes = {"train": train, "val": np.r_[np.arange(3), np.arange(1000, 1027)], "test": np.arange(2000, 2030)}
    table = duplicates.shared_rows(hashes, PARAMS)
    expected = 20 / 110
    row = table.loc["val in train"]
    assert (row["shared"], row["rows"], row["expected"]) == (3, 30, pytest.approx(expected))
    assert row["allowed"] == pytest.approx(expected + 5 * math.sqrt(expected * (1 - expected) / 30))
    assert table.loc["test in val", "shared"] == 0
    # no repeats in train: nothing may be shared (as in the numeric layout), unless leakage_tol says so
    hashes["train"] = np.arange(100)
    assert duplicates.shared_rows(hashes, PARAMS).loc["val in train", "allowed"] == 0.0
    assert duplicates.shared_rows(hashes, ValidateParams(leakage_tol=0.2)).loc["val in train", "allowed"] == 0.2


# ------------------------------------------------------------------------- decision logic


def _ref(column: Column, train: pd.Series) -> raw.RawReference:
    frame = pd.DataFrame({column.name: train})
    meta = type("M", (), {"feature_names": [column.name], "schema": [column], "task": "classification",
                          "target": "y"})()
    return raw.raw_references(frame, meta, PARAMS)[column.name]


def test_missing_values_fail_only_beyond_train_rate_plus_tolerance() -> None:
    ref = _ref(Column("x", "numeric", 0.0), pd.Series(np.arange(10_000.0)))

    def row(missing: int, n: int = 10_000) -> dict:
        values = np.arange(float(n))
        values[:missing] = np.nan
        return raw.profile_row(pd.Series(values), ref, PARAMS, drift=True)

    # no gap in train: gaps elsewhere are a finding only past missing_rate_tol (0.1)
    assert row(900)["missing_share"] <= row(900)["missing_allowed"] == pytest.approx(0.1)
    assert row(1100)["missing_share"] > row(1100)["missing_allowed"]
    # a train rate of 30% on a 90-row split: 5 standard errors (about 0.25) are wider than 0.1
    gappy = _ref(Column("x", "numeric", 0.3), pd.Series(np.arange(1000.0)))
    allowed = raw.profile_row(pd.Series(np.arange(90.0)), gappy, PARAMS, drift=True)["missing_allowed"]
    assert allowed == pytest.approx(0.3 + 5 * math.sqrt(0.3 * 0.7 * (1 / 90 + 1 / 1000)))


def test_unseen_categories_expected_from_trains_one_row_categories() -> None:
    column = Column("c", "categorical", 0.0, ["a", "b"])
    # half of train's values are categories seen once (near an id): new ones in val are expected
    train = pd.Series(["a"] * 250 + ["b"] * 250 + [f"u{i}" for i in range(500)])
    ref = _ref(column, train)
    assert ref.unseen_mass == pytest.approx(0.5) and len(ref.shares) == 502  # pooled ones are known too
    val = pd.Series(["a"] * 50 + ["b"] * 50 + [f"new{i}" for i in range(100)])
    row = raw.profile_row(val, ref, PARAMS, drift=True)
    assert row["unseen_share"] == 0.5 <= row["unseen_allowed"]
    # a column of few categories expects none: 10% new values fail at unseen_tol 0.05
    ref = _ref(column, pd.Series(["a", "b"] * 500))
    row = raw.profile_row(pd.Series(["a", "b"] * 450 + ["z"] * 100), ref, PARAMS, drift=True)
    assert row["unseen_allowed"] == 0.05 < row["unseen_share"] == pytest.approx(0.1)


def test_category_keys_are_the_models() -> None:
    counts = raw.category_counts(pd.Series([3, 3.0, "3", "", None, np.nan, "a"], dtype=object))
    assert counts.to_dict() == {"3": 3, "a": 1}
    assert raw.missing_count(pd.Series(["x", "", None], dtype="str"), "categorical") == 2
    assert raw.missing_count(pd.Series([1.0, np.nan, np.inf]), "numeric") == 1


def test_dtype_families_per_kind() -> None:
    assert raw.dtype_family(pd.Series(["a"], dtype="str")) == "text"
    assert raw.dtype_family(pd.Series(["a"], dtype=object)) == "text"
    assert raw.dtype_family(pd.Series([True], dtype="boolean")) == "boolean"
    assert raw.dtype_family(pd.Series(pd.to_datetime(["2020-01-01"], utc=True))) == "datetime"
    assert raw.dtype_family(pd.Series([1], dtype="Int64")) == "numeric"
    # a column declared categorical that holds numbers keeps train's dtype family
    ref = _ref(Column("zip", "categorical", 0.0, ["10115", "80331"]), pd.Series([10115, 80331] * 5))
    assert raw.profile_row(pd.Series([10115, 80331]), ref, PARAMS, drift=True)["dtype_ok"]
    numeric = _ref(Column("x"), pd.Series([1.5, 2.5]))
    assert not raw.profile_row(pd.Series(["1.5", "x"]), numeric, PARAMS, drift=True)["dtype_ok"]
    assert not raw.profile_row(pd.Series([True, False]), numeric, PARAMS, drift=True)["dtype_ok"]


def test_robust_bounds_leave_a_columns_own_outliers_outside() -> None:
    values = np.r_[np.random.default_rng(0).normal(50, 10, 400), 1e6, -1e6, np.nan, np.inf]
    ref = raw.value_reference(values, PARAMS, None)
    # quantiles at least 5 values from either end (not the 0.1% ones, which are the outliers)
    assert 50 < ref.high < 200 and -100 < ref.low < 50
    assert ref.n == 400 and ref.mean == pytest.approx(50, abs=2) and ref.std == pytest.approx(10, rel=0.15)
    assert raw.value_reference(values, ValidateParams(feature_bounds={"x": (0, 1)}), (0.0, 1.0)).bounds_from == "params"


def test_the_profile_suite_is_the_same_size_for_any_number_of_columns() -> None:
    assert len(profile_expectations(drift=False)) == 4 and len(profile_expectations(drift=True)) == 10


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_dvc_repro_on_a_messy_csv_runs_the_whole_pipeline(tmp_path) -> None:
    params = yaml.safe_load(SMALL_PARAMS)
    params["data"] = {"source": "file", "path": "data/raw/messy.csv", "target": "price"}
    repo = make_pipeline_repo(tmp_path / "repo", yaml.safe_dump(params))
    messy_frame(600).to_csv(repo / "data/raw/messy.csv", index=False)
    proc = run_cmd(["dvc", "repro"], repo)
    report = json.loads((repo / "reports/validation.json").read_text())
    assert report["success"] and report["layout"] == "raw" and report["warnings"] > 0
    assert "tolerated" in proc.stderr + proc.stdout
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) >= {
        "generate", "validate", "train", "evaluate", "export"}
    assert (repo / "models/model.onnx").is_file()
