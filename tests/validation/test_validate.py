"""The validate stage: real GX suites on small generated splits, each corruption caught by the
check meant for it (and only by the checks that should see it), the stage's exit code and
stderr, and a DVC pipeline that stops at validate.

Importing GX costs a few seconds, once per test session; each `run` on these small frames costs
well under a second.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import generate, validate
from stages.core.contracts import Meta
from stages.core.errors import DataError, ParamsError, ValidationFailed
from stages.core.params import DataParams, ValidateParams, parse_params
from stages.data.splits import read_split_frame
from stages.validation import checks, expectations
from stages.validation import gx as gx_checks
from stages.validation.expectations import column_reference, drift_expectations
from stages.validation.report import failure_message, jsonable
from tests.conftest import ROOT, SMALL_PARAMS, make_pipeline_repo, run_cmd

PARAMS = ValidateParams()


def copies(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {s: f.copy() for s, f in frames.items()}


def failed(report: dict) -> set[tuple[str, str, str | None]]:
    """(split, check, column) of every failed check."""
    sections = [*report["splits"].values(), *report["cross_split"].values()]
    return {(f["split"], f["check"], f["column"]) for s in sections for f in s["failed"]}


def the_failure(report: dict, check: str) -> dict:
    sections = [*report["splits"].values(), *report["cross_split"].values()]
    (found,) = [f for s in sections for f in s["failed"] if f["check"] == check]
    return found


# ------------------------------------------------------------------------------ clean data


@pytest.mark.parametrize("data", ["regression", "classes"])
def test_clean_data_passes_every_check(data: str, request: pytest.FixtureRequest) -> None:
    meta, frames = request.getfixturevalue(data)
    report = validate.run(PARAMS, copies(frames), meta)
    assert failed(report) == set()
    assert report["success"] is True and report["failed_checks"] == 0
    assert report["cross_split"]["leakage"]["success"] is True
    n_features = len(meta.feature_names)
    # schema + 2 row counts; per feature dtype, nulls, range (+ mean, std in val and test)
    per_target = 4 if meta.task == "classification" else 3
    assert report["splits"]["train"]["checks"] == 3 + 3 * n_features + per_target
    assert report["splits"]["val"]["checks"] == 3 + 5 * n_features + per_target
    assert report["splits"]["test"]["rows"] == meta.rows["test"]
    json.dumps(report, allow_nan=False)  # the report is plain JSON


# ------------------------------------------------------------------------------ corruptions


def test_nan_fails_nulls_only(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["val"].loc[[3, 7], "x1"] = np.nan
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "nulls", "x1")}
    failure = the_failure(report, "nulls")
    assert failure["expectation"] == "expect_column_values_to_not_be_null"
    assert failure["observed"].startswith("2 of 90 values null")


def test_inf_fails_range_and_says_infinite(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["val"].loc[5, "x2"] = np.inf
    report = validate.run(PARAMS, frames, meta)
    # inf is not null; the finite range bounds catch it (and its mean / std are not finite)
    assert failed(report) == {("val", "range", "x2"), ("val", "drift_mean", "x2"), ("val", "drift_std", "x2")}
    failure = the_failure(report, "range")
    assert failure["expectation"] == "expect_column_values_to_be_between"
    assert "1 of them infinite (inf)" in failure["observed"]
    assert "\n  val: range [x2]: expected finite values in [" in failure_message(report, "r.json")
    assert "(validate." not in failure_message(report, "r.json").splitlines()[1]  # no bound admits inf


def test_dropped_column_fails_schema_only(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["test"] = frames["test"].drop(columns=["x2"])
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("test", "schema", "x2")}
    assert the_failure(report, "schema")["observed"] == "missing x2"


def test_reordered_columns_fail_schema(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["train"] = frames["train"][["x1", "x0", "x2", "x3", "x4", "y"]]
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("train", "schema", None)}
    assert the_failure(report, "schema")["observed"].startswith("columns out of order: x1, x0")


def test_string_column_fails_dtype_only(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["test"]["x3"] = frames["test"]["x3"].astype(str)
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("test", "dtype", "x3")}
    failure = the_failure(report, "dtype")
    assert failure["expectation"] == "expect_column_values_to_be_in_type_list"
    assert failure["observed"].startswith("dtype str")


def test_row_in_two_splits_fails_leakage_only(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["val"].iloc[0] = frames["train"].iloc[10]  # same row count, one row shared
    frames["test"].iloc[[0, 1]] = frames["train"].iloc[[20, 21]].to_numpy()
    report = validate.run(PARAMS, frames, meta)
    assert {(s, c) for s, c, _ in failed(report)} == {("all", "leakage")}
    failure = the_failure(report, "leakage")
    assert failure["expectation"] == "expect_column_values_to_be_unique"
    assert failure["observed"] == "1 row of val also in train; 2 rows of test also in train"
    assert report["cross_split"]["leakage"]["success"] is False


def test_duplicate_rows_within_one_split_are_not_leakage(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["train"].iloc[1] = frames["train"].iloc[0]
    report = validate.run(PARAMS, frames, meta)
    assert ("all", "leakage") not in {(s, c) for s, c, _ in failed(report)}


def test_leakage_check_can_be_switched_off(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["val"].iloc[0] = frames["train"].iloc[10]
    report = validate.run(ValidateParams(check_leakage=False), frames, meta)
    assert report["success"] is True and "leakage" not in report["cross_split"]


def test_shifted_feature_fails_drift_mean_only(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    # +0.8 train std: inside the range bounds (about [-1, 2]) but beyond the 0.58 std allowed
    # for 90 val rows (5 standard errors)
    frames["val"]["x0"] += np.float32(0.8 * frames["train"]["x0"].std())
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "drift_mean", "x0")}
    assert the_failure(report, "drift_mean")["expectation"] == "expect_column_mean_to_be_between"
    assert failure_message(report, "r.json").endswith("(validate.drift_mean_tol)")  # the key that relaxes it


def test_rescaled_feature_fails_drift_std(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    x = frames["test"]["x4"]
    frames["test"]["x4"] = x.mean() + (x - x.mean()) * np.float32(0.3)  # same mean, 30% of the spread
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("test", "drift_std", "x4")}
    assert the_failure(report, "drift_std")["expectation"] == "expect_column_stdev_to_be_between"


def test_empty_split_fails_row_counts(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["test"] = frames["test"].iloc[:0]
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("test", "row_count", None), ("test", "min_rows", None)}
    assert the_failure(report, "row_count")["observed"] == "0 rows"


def test_split_smaller_than_meta_fails_row_count_only(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["val"] = frames["val"].iloc[:80]
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "row_count", None)}
    assert the_failure(report, "row_count")["expected"] == "90 rows (data/meta.json)"


def test_label_outside_class_set_fails_labels(classes: tuple[dict, dict]) -> None:
    meta, frames = classes
    frames = copies(frames)
    frames["val"].loc[4, "y"] = 7
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "labels", "y")}
    failure = the_failure(report, "labels")
    assert failure["expectation"] == "expect_column_values_to_be_in_set"
    assert "e.g. 7" in failure["observed"]


def test_float_labels_fail_dtype(classes: tuple[dict, dict]) -> None:
    meta, frames = classes
    frames = copies(frames)
    frames["train"]["y"] = frames["train"]["y"].astype(np.float64)
    report = validate.run(PARAMS, frames, meta)
    # float labels hash differently from int labels, so no false leakage either
    assert failed(report) == {("train", "dtype", "y")}


def test_class_missing_from_split_fails_classes_present(classes: tuple[dict, dict]) -> None:
    meta, frames = classes
    frames = copies(frames)
    labels = frames["test"]["y"]
    frames["test"]["y"] = labels.where(labels != 2, 0)  # class 2 relabelled as 0: same row count
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("test", "classes_present", "y"), ("test", "class_balance", "y")}
    failure = the_failure(report, "classes_present")
    assert failure["expectation"] == "expect_column_distinct_values_to_contain_set"
    assert failure["observed"] == "missing [2]"


def test_class_imbalance_fails_class_balance_only(classes: tuple[dict, dict]) -> None:
    meta, frames = classes
    frames = copies(frames)
    zeros = frames["val"].index[frames["val"]["y"] == 0][:12]
    frames["val"].loc[zeros, "y"] = 1  # about 13% of val moved from class 0 to class 1
    report = validate.run(PARAMS, frames, meta)
    assert failed(report) == {("val", "class_balance", "y")}
    assert "class 0" in the_failure(report, "class_balance")["observed"]


def test_class_balance_tolerates_one_row_of_rounding() -> None:
    meta = Meta(task="classification", feature_names=[], target="y", classes=[0, 1])
    train = pd.DataFrame({"y": [0] * 22 + [1] * 20})
    val = pd.DataFrame({"y": [0] * 5 + [1] * 4})  # 0.556 vs 0.524: within 0.05 + 1/9
    shifted = pd.DataFrame({"y": [0] * 7 + [1] * 2})
    assert checks.class_balance_failures({"train": train, "val": val, "test": val}, meta, 0.05) == []
    (failure,) = checks.class_balance_failures({"train": train, "val": val, "test": shifted}, meta, 0.05)
    assert failure["split"] == "test" and failure["check"] == "class_balance"


def test_explicit_feature_bounds_override_robust_bounds(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    report = validate.run(ValidateParams(feature_bounds={"x0": (0.0, 0.5)}), copies(frames), meta)
    assert {(s, c, col) for s, c, col in failed(report)} == {
        ("train", "range", "x0"), ("val", "range", "x0"), ("test", "range", "x0")}
    assert "validate bounds" in the_failure_in(report, "train", "range")["expected"]
    assert report["reference"]["x0"]["bounds_from"] == "params"


def the_failure_in(report: dict, split: str, check: str) -> dict:
    (found,) = [f for f in report["splits"][split]["failed"] if f["check"] == check]
    return found


def test_regression_target_bounds(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    report = validate.run(ValidateParams(target_bounds=(-100.0, 100.0)), frames, meta)
    assert report["success"] and report["reference"]["y"]["bounds_from"] == "params"
    frames["test"].loc[0, "y"] = 1e6  # an absurd target: caught by the range check on y
    report = validate.run(PARAMS, frames, meta)
    assert ("test", "range", "y") in failed(report)


def test_unknown_column_in_feature_bounds_is_a_params_error(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    with pytest.raises(ParamsError, match="validate.feature_bounds: x99 not a feature"):
        validate.run(ValidateParams(feature_bounds={"x99": (0.0, 1.0)}), frames, meta)


def test_incomplete_meta_is_a_data_error(classes: tuple[dict, dict]) -> None:
    meta, frames = classes
    with pytest.raises(DataError, match="missing key\\(s\\) classes"):
        validate.run(PARAMS, frames, replace(meta, classes=None))
    with pytest.raises(DataError, match="split\\(s\\) test not given"):
        validate.run(PARAMS, {s: frames[s] for s in ("train", "val")}, meta)


def test_params_reject_bad_bounds() -> None:
    with pytest.raises(ParamsError, match="validate.feature_bounds.x0"):
        parse_params({"validate": {"feature_bounds": {"x0": [1, 0]}}})
    with pytest.raises(ParamsError, match="validate.target_bounds"):
        parse_params({"validate": {"target_bounds": [0, float("inf")]}})
    with pytest.raises(ParamsError, match="unknown key 'validate.drift'"):
        parse_params({"validate": {"drift": 1}})


# ------------------------------------------------------------------------- decision logic


def test_robust_bounds_ignore_non_finite_values_and_outliers() -> None:
    values = np.r_[np.linspace(0, 1, 1001), np.inf, np.nan, 50.0].astype(np.float32)
    ref = column_reference(pd.Series(values), quantile=0.01, margin=1.0, bounds=None)
    # q1%..q99% of the finite values, about [0.01, 0.99], widened by their distance each side
    assert ref.low == pytest.approx(0.01 - 0.98, abs=0.01)
    assert ref.high == pytest.approx(0.99 + 0.98, abs=0.01)
    assert ref.n == 1002 and math.isfinite(ref.mean)
    assert column_reference(pd.Series(["a", "b"]), 0.01, 1.0, None).low is None


def test_drift_tolerance_widens_for_small_splits_only() -> None:
    ref = column_reference(pd.Series(np.random.default_rng(0).standard_normal(100_000)), 0.001, 1.0, None)

    def mean_halfwidth(n_split: int) -> float:
        mean = drift_expectations("x", ref, n_split, PARAMS)[0]
        return (mean.max_value - mean.min_value) / 2 / ref.std

    assert mean_halfwidth(100_000) == pytest.approx(PARAMS.drift_mean_tol)  # configured tolerance
    assert mean_halfwidth(30) == pytest.approx(5 * math.sqrt(1 / 30 + 1 / 100_000), rel=1e-6)
    assert drift_expectations("x", ref, 1, PARAMS) == []  # no spread in one row


def test_drift_std_allowance_is_drift_noise_z_standard_errors_on_a_small_split() -> None:
    # train: 200 seeded normal values; val: 12 rows. The relative standard error of a sample std
    # is sqrt((kurtosis - 1) / 4 * (1/n_val + 1/n_train)), about 0.2 here: 5 of them (about 1.0)
    # is the std's allowance, far wider than drift_std_tol 0.25
    train = np.random.default_rng(1).standard_normal(200)
    kurtosis = np.mean((train - train.mean()) ** 4) / np.var(train, ddof=1) ** 2
    n = 12
    allowance = PARAMS.drift_noise_z * math.sqrt((kurtosis - 1) / 4 * (1 / n + 1 / len(train)))
    assert allowance > 2 * PARAMS.drift_std_tol
    ref = column_reference(pd.Series(train), PARAMS.bounds_quantile, PARAMS.bounds_margin, None)
    std = drift_expectations("x", ref, n, PARAMS)[1]
    assert std.meta["check"] == "drift_std"
    assert std.max_value == pytest.approx(train.std(ddof=1) * (1 + allowance), rel=1e-9)
    assert std.min_value == pytest.approx(max(train.std(ddof=1) * (1 - allowance), 0.0), abs=1e-12)

    # through GX: a val column spread to just inside the allowance passes, just outside fails
    unit = np.linspace(-1, 1, n)
    unit = (unit - unit.mean()) / unit.std(ddof=1)  # sample std 1, mean 0

    def std_fails(ratio: float) -> bool:
        frame = pd.DataFrame({"x": train.mean() + unit * ratio * train.std(ddof=1)})
        suite = drift_expectations("x", ref, n, PARAMS)  # new expectations: GX binds them to one suite
        _, failures = validate.validate_split(validate.make_context(), "val", frame, suite[1:])
        return bool(failures)

    assert not std_fails(1 + 0.95 * allowance)
    assert std_fails(1 + 1.05 * allowance)


def test_gx_frame_keeps_values_and_dtype_kind() -> None:
    frame = pd.DataFrame({"f": np.array([0.1, np.inf], np.float32), "i": np.array([1, 2], np.int32),
                          "s": ["a", "b"]})
    cast = gx_checks.gx_frame(frame)
    assert [str(t) for t in cast.dtypes] == ["float64", "int64", str(frame["s"].dtype)]
    assert cast["f"].to_numpy()[0] == np.float64(np.float32(0.1))
    assert frame["f"].dtype == np.float32  # the input is not modified


def test_expectation_batches_split_big_frames_by_column_and_keep_every_check(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    train = frames["train"]  # 420 rows x 6 columns: 20160 bytes as float64
    suite = expectations.split_expectations("train", train, meta, PARAMS,
                                        expectations.reference_stats(PARAMS, train, meta))
    (whole,) = gx_checks.expectation_batches("train", train, suite, max_bytes=420 * 8 * 6)
    assert whole == ("train", None, suite, True)  # fits: one batch of the whole frame, as it always was
    batches = gx_checks.expectation_batches("train", train, suite, max_bytes=420 * 8 * 2)
    assert [(b.name, b.columns, b.cast) for b in batches] == [
        ("train table", None, False), ("train columns x0..x1", ["x0", "x1"], True),
        ("train columns x2..x3", ["x2", "x3"], True), ("train columns x4..y", ["x4", "y"], True)]
    table_checks = {type(e).__name__ for e in batches[0].expectations}
    assert table_checks == {"ExpectTableColumnsToMatchOrderedList", "ExpectTableRowCountToEqual",
                            "ExpectTableRowCountToBeBetween"}
    for batch in batches[1:]:
        assert {e.column for e in batch.expectations} == set(batch.columns)
    assert sorted(map(id, (e for b in batches for e in b.expectations))) == sorted(map(id, suite))
    # a budget below one column still makes progress, one column per batch
    assert len(gx_checks.expectation_batches("train", train, suite, max_bytes=1)) == 1 + 6


def test_batched_validation_reports_what_one_batch_does(regression: tuple[dict, dict]) -> None:
    meta, frames = regression
    frames = copies(frames)
    frames["val"].loc[[3, 7], "x4"] = np.nan          # a column in the last batch
    frames["test"]["x1"] = frames["test"]["x1"] + 5.0  # range and drift in an early batch
    frames["test"] = frames["test"].drop(columns=["x3"])  # a table check
    one = validate.run(PARAMS, copies(frames), meta)
    batched = validate.run(PARAMS, copies(frames), meta, batch_bytes=1)
    assert failed(batched) == failed(one)
    assert {("val", "nulls", "x4"), ("test", "range", "x1"), ("test", "schema", "x3")} <= failed(one)
    assert {s: v["checks"] for s, v in batched["splits"].items()} == {s: v["checks"] for s, v in one["splits"].items()}
    assert batched["failed_checks"] == one["failed_checks"]


def test_read_split_frame_matches_pandas(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.array([1.5, np.nan, 3.0], np.float32), "s": ["x", "y", None],
                          "n": np.array([1, 2, 3], np.int64)}, index=pd.Index([10, 11, 12], name="row"))
    frame.to_parquet(tmp_path / "val.parquet")
    got = read_split_frame("val", tmp_path)
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "val.parquet"))
    (tmp_path / "test.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="test.parquet: cannot read parquet"):
        read_split_frame("test", tmp_path)


def test_jsonable_makes_plain_json() -> None:
    value = {"a": np.float32(np.inf), "b": [np.int64(3), float("nan")], "c": (1, None)}
    assert jsonable(value) == {"a": "inf", "b": [3, "nan"], "c": [1, None]}


# ------------------------------------------------------------------------------ the stage


def _stage_dir(tmp_path: Path, params_text: str = "validate:\n  min_rows: 5\n") -> Path:
    generate.run(DataParams(kind="friedman", n_samples=300, n_features=5, seed=11), tmp_path / "data")
    (tmp_path / "params.yaml").write_text(params_text)
    return tmp_path


def test_main_writes_report_and_data_docs_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(_stage_dir(tmp_path))
    report = validate.main()
    assert report["success"]
    assert json.loads((tmp_path / "reports/validation.json").read_text()) == report
    docs = tmp_path / "reports/data_docs"
    assert (docs / "index.html").is_file()
    assert {p.stem for p in (docs / "expectations").glob("*.html")} == {"train", "val", "test", "leakage"}
    assert any((docs / "validations").rglob("*.html"))
    # no gx/ project folder, no temporary leftovers: only what the stage declares
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "params.yaml", "reports"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["data_docs", "validation.json"]


def test_main_writes_the_report_then_raises_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(_stage_dir(tmp_path))
    val = read_split_frame("val")
    val.loc[0, "x1"] = np.nan
    val.to_parquet("data/val.parquet")
    with pytest.raises(ValidationFailed) as err:
        validate.main()
    assert str(err.value).splitlines()[1].strip().startswith("val: nulls [x1]: expected no nulls")
    report = json.loads(Path("reports/validation.json").read_text())
    assert report["success"] is False and report["splits"]["val"]["failed"][0]["column"] == "x1"


def test_stage_exits_1_with_a_list_of_failed_checks(tmp_path: Path) -> None:
    _stage_dir(tmp_path)
    val = read_split_frame("val", tmp_path / "data")
    val.loc[0, "x1"] = np.nan
    val.loc[1, "x2"] = -np.inf
    val.to_parquet(tmp_path / "data/val.parquet")
    proc = run_cmd(["python", "-m", "stages.validate"], tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line[:4].isdigit()]  # drop log lines
    assert lines[0].startswith("fitline validate: error: data validation failed, ")
    assert any(line.strip().startswith("val: nulls [x1]: expected no nulls") for line in lines)
    assert any(line.strip().startswith("val: range [x2]:") and "infinite" in line for line in lines)
    assert json.loads((tmp_path / "reports/validation.json").read_text())["success"] is False


# ---------------------------------------------------------------------------- end to end


def _pipeline_params() -> str:
    """The project's params.yaml (every section a dvc.yaml stage names) with the small test sizes."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in yaml.safe_load(SMALL_PARAMS).items():
        params.setdefault(section, {}).update(values)
    return yaml.safe_dump(params, sort_keys=False)


@pytest.mark.slow
def test_dvc_repro_stops_at_validate_on_bad_data(tmp_path: Path) -> None:
    repo = make_pipeline_repo(tmp_path / "repo", _pipeline_params())
    run_cmd(["dvc", "repro", "generate", "validate"], repo)
    good_lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert json.loads((repo / "reports/validation.json").read_text())["success"] is True

    # bad data from upstream: a NaN in val, committed as generate's output (a plain edit would
    # just be restored from DVC's cache by the next `dvc repro`)
    val = pd.read_parquet(repo / "data/val.parquet")
    val.loc[3, "x1"] = np.nan
    val.to_parquet(repo / "data/val.parquet")
    run_cmd(["dvc", "commit", "-f", "generate"], repo)
    proc = run_cmd(["dvc", "repro"], repo, check=False)
    assert proc.returncode != 0
    assert "val: nulls [x1]: expected no nulls" in proc.stderr
    assert "failed to reproduce 'validate'" in proc.stderr
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["validate"] == good_lock["validate"]  # the failed run is not recorded
    downstream = [s for s in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
                  if s not in ("generate", "validate")]
    for stage in downstream:  # train, evaluate, export: never ran
        assert stage not in lock
        assert f"Running stage '{stage}'" not in proc.stdout + proc.stderr
    # the report of the failed run is there to read
    assert json.loads((repo / "reports/validation.json").read_text())["success"] is False
