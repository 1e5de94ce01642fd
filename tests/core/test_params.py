"""params.yaml parsing: defaults, and every kind of bad input named in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from stages.core.errors import ParamsError
from stages.core.params import Params, load_params, parse_params
from tests.conftest import ROOT, subprocess_env


def test_project_params_yaml_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.kind == "friedman"


def test_empty_params_take_defaults():
    params = parse_params({})
    assert params.data.n_samples == 20000
    assert params.data.split.train == pytest.approx(0.7)
    assert params.train.optimizer == "adam"


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(ValidationError, match="frozen"):
        params.data.n_samples = 5  # type: ignore[misc]
    assert params.data.n_samples == parse_params({}).data.n_samples


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ({"data": {"bogus": 1}}, ["unknown key 'data.bogus'", "n_samples"]),
        ({"nonsense": {}}, ["unknown key 'nonsense'", "data", "train"]),
        ({"data": {"kind": "spiral"}}, ["data.kind", "'spiral'", "linear", "friedman", "classification"]),
        ({"data": {"n_samples": "many"}}, ["data.n_samples", "'many'"]),
        ({"data": {"n_samples": 5}}, ["data.n_samples", "5", "greater than or equal to 20"]),
        ({"data": {"noise": -1}}, ["data.noise", "-1"]),
        ({"data": {"split": {"train": 0.7, "val": 0.2, "test": 0.2}}}, ["data.split", "sum to 1", "1.1"]),
        ({"data": {"kind": "linear", "n_features": 3, "n_informative": 5}}, ["data.n_informative", "5", "n_features=3"]),
        ({"data": {"source": "file"}}, ["data.path", "required", "file"]),
        ({"data": {"source": "file", "path": "x.txt"}}, ["data.path", "x.txt", ".csv or .parquet"]),
        ({"data": {"kind": "friedman", "n_features": 3, "n_informative": 2}}, ["data.n_features", "friedman"]),
        ({"data": {"kind": "classification", "noise": 1.5}}, ["data.noise", "label-flip"]),
        ({"data": {"kind": "classification", "noise": 0.1, "n_classes": 3, "class_weights": [0.5, 0.5]}}, ["data.class_weights", "n_classes is 3"]),
        ({"data": {"kind": "linear", "class_weights": [0.5, 0.5]}}, ["data.class_weights", "classification"]),
        ({"train": {"optimizer": "adamx"}}, ["train.optimizer", "'adamx'", "adamw", "nesterov"]),
        ({"train": {"lr": 0}}, ["train.lr", "0"]),
        ({"train": {"weight_decay": 0.1, "optimizer": "adam"}}, ["train.weight_decay", "adamw"]),
        ({"train": {"epochs": 5, "warmup_epochs": 5}}, ["train.warmup_epochs", "train.epochs=5"]),
        ({"train": {"precision": "bf16", "device": "cpu"}}, ["train.precision", "cuda"]),
        ({"train": {"early_stopping": {"patience": 0}}}, ["train.early_stopping.patience"]),
        ("just a string", ["top level must be a mapping"]),
    ],
)
def test_bad_params_name_the_key(raw, fragments):
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_yaml_number_written_as_1e_minus_3_is_a_float(tmp_path):
    # PyYAML reads `1e-3` (no dot) as a string; the typed params must still take it as 0.001
    (tmp_path / "params.yaml").write_text("train:\n  lr: 1e-3\n")
    assert load_params(tmp_path / "params.yaml").train.lr == pytest.approx(0.001)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        load_params(tmp_path / "params.yaml")


def test_stage_entry_point_reports_params_error_without_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  kind: spiral\n")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.generate"], cwd=tmp_path, capture_output=True, text=True,
        env={**subprocess_env(), "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("fitline generate: error: params.yaml: data.kind")
    assert not (tmp_path / "data").exists(), "a params error must not start any work"
