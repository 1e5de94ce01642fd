"""`fitline monitor`: a batch against the train split and the model's test predictions."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import generate
from stages.core.contracts import DATA_DIR, ONNX_PATH, Column
from stages.core.params import DataParams, ExportParams, MonitorParams, TrainParams
from stages.data.splits import load_splits, read_split_frame
from stages.serving import onnx as onnx_export
from stages.serving.drift import categorical_shift, ks_2samp, numeric_shift, psi
from stages.serving.monitor import CannotJudge, DriftFound, column_problems, run_monitor
from stages.training.loop import train_model
from tests.conftest import ROOT, run_cmd

P = MonitorParams()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace with generated data and an exported model, as `dvc repro` leaves it."""
    root = tmp_path_factory.mktemp("ws")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    meta = generate.run(DataParams(kind="linear", n_samples=2000, n_features=4, n_informative=3, seed=2), root / DATA_DIR)
    splits = load_splits(root / DATA_DIR, meta)
    result = train_model(TrainParams(hidden=(8,), epochs=20, device="cpu"), splits, meta)
    onnx_export.export_model(ExportParams(quantization="none", latency_repeats=1), result.model, result.config,
                             {"test": splits["test"]}, root / ONNX_PATH.parent)
    return root


def _batch(root, tmp_path, change=None):
    df = read_split_frame("test", root / DATA_DIR)
    if change:
        df = change(df)
    path = tmp_path / "batch.csv"
    df.to_csv(path, index=False)
    return path


def test_the_test_split_passes(workspace, tmp_path):
    report = run_monitor(_batch(workspace, tmp_path), tmp_path / "monitor.json", workspace, P)
    assert report["success"] and report["problems"] == []
    assert set(report["columns"]) == {"x0", "x1", "x2", "x3"} and report["predictions"]["drifted"] is False
    assert json.loads((tmp_path / "monitor.json").read_text())["success"] is True


def test_one_shifted_column_fails_naming_it(workspace, tmp_path):
    path = _batch(workspace, tmp_path, lambda df: df.assign(x2=df["x2"] + 1.5 * df["x2"].std()))
    with pytest.raises(DriftFound) as err:
        run_monitor(path, tmp_path / "monitor.json", workspace, P)
    lines = str(err.value).splitlines()[1:]
    assert any(line.strip().startswith("x2: mean") and "drifted" in line for line in lines)
    assert not any(line.strip().startswith(("x0", "x1", "x3")) for line in lines)
    report = json.loads((tmp_path / "monitor.json").read_text())
    assert report["columns"]["x2"]["drifted"] and not report["columns"]["x0"]["drifted"]


def test_missing_values_ranges_and_columns_are_problems(workspace, tmp_path):
    def spoil(df):
        df = df.copy()
        df.loc[: len(df) // 3, "x0"] = np.nan
        df.loc[: len(df) // 10, "x1"] = 1e6
        return df.drop(columns="x3")
    with pytest.raises(DriftFound) as err:
        run_monitor(_batch(workspace, tmp_path, spoil), tmp_path / "m.json", workspace, P)
    text = str(err.value)
    assert re.search(r"x0: 3\d\.\d% missing vs 0\.0% in train \(allowed \+10%, monitor.missing_rate_tol\)", text)
    assert re.search(r"x1: 1\d\.\d% of values outside train's range \[", text)
    assert "x3: column missing from the batch" in text


def test_cannot_judge_too_few_rows_or_no_model(workspace, tmp_path):
    with pytest.raises(CannotJudge, match=r"the batch has 10 rows; at least 30 .*monitor.min_rows"):
        run_monitor(_batch(workspace, tmp_path, lambda df: df.head(10)), tmp_path / "m.json", workspace, P)
    empty = tmp_path / "empty"
    (empty / DATA_DIR).mkdir(parents=True)
    with pytest.raises(CannotJudge, match="no reference data"):
        run_monitor(_batch(workspace, tmp_path), tmp_path / "m.json", empty, P)
    assert CannotJudge.exit_code == 2 and DriftFound.exit_code == 1


def test_a_wrong_type_is_named():
    col = Column("x", "numeric")
    problems = column_problems(col, pd.Series([1.0, 2.0, 3.0]), pd.Series([1.0, 2.0, 3.0]), P)
    assert problems == []
    with pytest.raises(Exception, match=r"column 'x' is numeric but has 1 non-numeric value\(s\), e.g. 'abc'"):
        column_problems(col, pd.Series([1.0, 2.0]), pd.Series(["1", "abc"]), P)


def test_drift_statistics_decisions():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=4000)
    assert not numeric_shift("x", ref, rng.normal(size=500), 0.01, 0.2).drifted  # the same distribution
    small = numeric_shift("x", ref, rng.normal(0.2, 1, size=5000), 0.01, 0.2)
    assert small.p_value < 0.01 and not small.drifted  # significant, but too small to alarm (PSI)
    assert numeric_shift("x", ref, rng.normal(1.0, 1, size=500), 0.01, 0.2).drifted
    d, p = ks_2samp(np.arange(100.0), np.arange(100.0) + 50)
    assert d == pytest.approx(0.5) and p < 1e-8
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    cats = rng.choice(["a", "b"], 2000)
    new = np.concatenate([rng.choice(["a", "b"], 300), np.array(["c"] * 200)])
    shift = categorical_shift("c", cats, new, 0.01, 0.2)
    assert shift.drifted and "40.0% of the batch in none of them" in shift.detail


def test_the_cli_exit_codes_and_lines(workspace, tmp_path):
    fitline = Path(sys.executable).parent / "fitline"
    ok = _batch(workspace, tmp_path)
    proc = run_cmd([str(fitline), "monitor", "--input", str(ok), "--root", str(workspace), "--report",
                    str(tmp_path / "r.json")], tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    shifted = tmp_path / "shifted.csv"
    pd.read_csv(ok).assign(x1=lambda d: d["x1"] + 3.0).to_csv(shifted, index=False)
    proc = run_cmd([str(fitline), "monitor", "--input", str(shifted), "--root", str(workspace), "--report",
                    str(tmp_path / "r.json")], tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"^  x1: mean .*drifted", proc.stderr, re.M)
    few = tmp_path / "few.csv"
    pd.read_csv(ok).head(5).to_csv(few, index=False)
    proc = run_cmd([str(fitline), "monitor", "--input", str(few), "--root", str(workspace)], tmp_path, check=False)
    assert proc.returncode == 2 and "fitline monitor: error: the batch has 5 rows" in proc.stderr
