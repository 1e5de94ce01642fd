"""params.yaml parsing: defaults, and every kind of bad input named in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Literal, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from stages.core.errors import ParamsError
from stages.core.params import (
    COMPARE_LRS,
    JUDGED_LOSS,
    LOSS_LABEL,
    CompareParams,
    JudgedLoss,
    OptimizerName,
    Params,
    TaskName,
    allowed,
    load_params,
    parse_params,
)
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


# -------------------------------------------------------------- one source for every default


SECTIONS = [name for name in Params.model_fields]


def _project_params() -> tuple[dict, Params]:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return raw, parse_params(raw)


@pytest.mark.parametrize("section", SECTIONS)
def test_code_defaults_equal_params_yaml(section):
    """The typed defaults are the values params.yaml ships: a file without a key changes nothing."""
    default, shipped = getattr(Params(), section), getattr(_project_params()[1], section)
    assert default.model_dump() == shipped.model_dump()


def _missing_keys(model: type[BaseModel], raw: dict, where: str) -> list[str]:
    """Fields of `model` (nested sections too) that `raw` does not spell out."""
    missing = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in raw:
            missing.append(f"{where}{key}")
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += _missing_keys(field.annotation, raw[key], f"{where}{key}.")
    return missing


def test_params_yaml_spells_out_every_key():
    # so the default-equality test above covers every key, and users see every knob
    assert _missing_keys(Params, _project_params()[0], "") == []


def _literal_fields(model: type[BaseModel]) -> dict[str, tuple]:
    """{field name: allowed values} of the Literal fields of `model` and its nested sections."""
    out: dict[str, tuple] = {}
    for name, field in model.model_fields.items():
        if get_origin(field.annotation) is Literal:
            out[name] = get_args(field.annotation)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(_literal_fields(field.annotation))
    return out


# `key: value   # a | b (why) | c`, or `distributed: {...}   # backend: a | b | c`
_ALTERNATIVES = re.compile(r"^  (\w+):[^#]*#\s*(?:(\w+):\s*)?([^|#]+(?:\|[^|#]+)+)$")


def test_params_yaml_comments_list_each_options_values():
    """Every option's `a | b | c` comment in params.yaml (so in examples/ too) is its Literal."""
    sections = {field.alias or name: field.annotation for name, field in Params.model_fields.items()}
    listed: dict[str, tuple] = {}
    section = ""
    for line in (ROOT / "params.yaml").read_text().splitlines():
        if re.match(r"^\w+:", line):
            section = line.split(":")[0]
        match = _ALTERNATIVES.match(line)
        key = match and (match.group(2) or match.group(1))
        if section in sections and key in _literal_fields(sections[section]):  # not a `|` in prose
            listed[f"{section}.{key}"] = tuple(part.split()[0] for part in match.group(3).split("|"))
    declared = {f"{sec}.{key}": values for sec, model in sections.items()
                for key, values in _literal_fields(model).items()}
    assert listed == declared


def test_option_tables_are_keyed_by_their_literal():
    assert tuple(COMPARE_LRS) == get_args(OptimizerName)
    assert tuple(JUDGED_LOSS) == get_args(TaskName)
    assert tuple(LOSS_LABEL) == get_args(JudgedLoss) == tuple(JUDGED_LOSS.values())
    assert CompareParams().optimizers == get_args(OptimizerName)


def test_error_texts_list_the_literals_values():
    with pytest.raises(ParamsError, match=re.escape("name one or more of " + allowed(OptimizerName))):
        parse_params({"sweep": {"compare": {"optimizers": []}}})
    # pydantic's own message for a Literal lists its values in declaration order
    with pytest.raises(ParamsError, match=re.escape("'sgd', 'momentum', 'nesterov', 'adagrad'")):
        parse_params({"train": {"optimizer": "adamx"}})


@pytest.mark.parametrize(("raw", "key"), [
    ({"data": {"noise": float("inf")}}, "data.noise"),
    ({"train": {"reg_strength": float("inf")}}, "train.reg_strength"),
    ({"train": {"momentum": float("nan")}}, "train.momentum"),
    ({"train": {"grad_clip": float("inf")}}, "train.grad_clip"),
    ({"evaluate": {"overfit_gap": float("inf")}}, "evaluate.overfit_gap"),
    ({"validate": {"feature_bounds": {"x0": [0, float("inf")]}}}, "validate.feature_bounds.x0"),
    ({"validate": {"target_bounds": [float("-inf"), 1]}}, "validate.target_bounds"),
])
def test_non_finite_numbers_are_refused_naming_the_key(raw, key):
    """`data.noise: .inf` passed the params check (no upper bound) and overwrote the splits with
    inf targets; `train.reg_strength: .inf` was reported as a diverged run blaming train.lr."""
    with pytest.raises(ParamsError, match=rf"^params.yaml: {re.escape(key)}[.\d]*: (inf|-inf|nan) is not allowed: "
                                          "Input should be a finite number(, or 'auto')?$"):
        parse_params(raw)


def test_non_finite_yaml_spelling_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  noise: .inf\n")
    with pytest.raises(ParamsError, match="data.noise: inf is not allowed"):
        load_params(tmp_path / "params.yaml")
