"""The raw-row graph: one ONNX input per column of a real-looking table (numbers with gaps,
categories with "" and unseen values, booleans, dates, odd column names), its encoding front
against stages.data.encoding, parity on raw rows, int8 leaving the front alone, and `fitline
predict` on the rows as they are in the user's file.

The torch model is the training side's raw-row model (build_model of the schema: imputation,
indicators, date parts, one-hots), seeded, with its medians and scaling fitted on the train rows.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from torch import nn

from stages.core.contracts import Column, ModelConfig
from stages.core.errors import DataError, ExportError
from stages.core.params import ExportParams
from stages.data.encoding import MISSING, UNKNOWN, category_index, category_keys, encode_frame, onnx_inputs
from stages.data.splits import Split
from stages.serving import onnx as onnx_export
from stages.serving.predict import METADATA_KEY, OnnxModel, graph_output_names, predict_frame, read_frame
from stages.serving.raw_graph import ENCODING, category_table, input_graph, internal_prefix
from stages.serving.rows import EDGE_ROWS, edge_rows
from stages.training.models import build_model, fit_scaling
from tests.conftest import run_cmd

FITLINE = Path(sys.executable).parent / "fitline"
SCHEMA = [
    Column("area m²", "numeric", 0.1),
    Column("city name", "categorical", 0.1, ["Lyon", "Paris", "Zürich"]),
    Column("prediction", "categorical", 0.0, ["a", "b"]),  # the regression output's name
    Column("is new", "boolean", 0.0, ["False", "True"]),
    Column("listed", "datetime", 0.1),
    Column("features", "numeric"),  # the numeric graph's input name
]
NAMES = [c.name for c in SCHEMA]
CLASSES = ["cheap", "fair", "dear"]


def raw_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows as a user's table has them: gaps, "", a city never seen in training (Oslo)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "area m²": rng.normal(80, 25, n),
        "city name": rng.choice(np.array(["Lyon", "Paris", "Zürich", "Oslo", "", None], dtype=object), n),
        "prediction": rng.choice(["a", "b", "c"], n),
        "is new": rng.choice([True, False], n),
        "listed": pd.Timestamp("2021-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
        "features": rng.normal(0, 1, n),
    })
    df.loc[rng.random(n) < 0.1, "area m²"] = np.nan
    df.loc[rng.random(n) < 0.1, "listed"] = pd.NaT
    return df


def hand_model(task: str) -> tuple[nn.Module, ModelConfig, pd.DataFrame, pd.DataFrame]:
    """(model, the raw-row config, train frame, test frame)."""
    classes = CLASSES if task == "classification" else None
    cfg = ModelConfig.from_dict({
        "task": task, "feature_names": NAMES, "target": "price", "classes": classes, "n_features": len(NAMES),
        "n_outputs": 3 if classes else 1, "model": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0,
        "scaling": "standard", "columns": [dataclasses.asdict(c) for c in SCHEMA]})
    train, test = raw_frame(400, 0), raw_frame(120, 1)
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))
    fit_scaling(model, encode_frame(train, SCHEMA), None, "standard")
    return model.eval(), cfg, train, test


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def exported(tmp: Path, task: str, quantization: str):
    model, cfg, train, test = hand_model(task)
    out = torch_out(model, encode_frame(test, SCHEMA))
    # the target is the model's own output: torch scores perfectly, int8 shows its loss alone
    y = out.argmax(axis=1) if task == "classification" else out
    split = Split(encode_frame(test, SCHEMA), y)
    params = ExportParams(quantization=quantization, calibration_rows=200, latency_repeats=1)
    metrics = onnx_export.export_model(params, model, cfg, {"train": Split(encode_frame(train, SCHEMA), y[:0]),
                                       "test": split}, tmp, frames={"train": train, "test": test})
    return tmp, metrics, model, cfg, test


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    return exported(tmp_path_factory.mktemp("raw_reg"), "regression", "dynamic")


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    return exported(tmp_path_factory.mktemp("raw_cls"), "classification", "static")


def metadata(path: Path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY])


# ------------------------------------------------------------------------ the encoding front


def test_category_table_is_encodings_category_index():
    column = Column("c", "categorical", vocabulary=["x", "y", "z"])
    keys, values = category_table(column)
    assert keys == ["", "x", "y", "z"]
    assert values == list(category_index(np.array(keys, dtype=object), column.vocabulary))
    assert values[0] == MISSING
    for bad, why in ([["x", "x"], "has duplicates"], [["x", ""], "holds ''"], [["x", 3], "holds 3"]):
        with pytest.raises(ExportError, match=rf"column 'c': its vocabulary {why}; it must be distinct non-empty"):
            category_table(Column("c", "categorical", vocabulary=bad))


def test_graph_names_never_collide_with_columns():
    assert internal_prefix(["a", "b"]) == "fitline/"
    assert internal_prefix(["fitline/encoded", "_fitline/x"]) == "__fitline/"
    assert graph_output_names("regression", ["prediction", "prediction_predicted"]) == {
        "prediction": "prediction_predicted_predicted"}
    assert graph_output_names("classification", ["label"]) == {"probabilities": "probabilities",
                                                               "label": "label_predicted"}


def test_input_graph_alone_gives_encode_frames_matrix():
    """The LabelEncoder front maps onnx_inputs(rows) to exactly encode_frame(rows): unseen
    categories to UNKNOWN, "" and None to MISSING, NaN kept for the network to impute."""
    frame = pd.concat([raw_frame(50, 3), edge_rows(raw_frame(5, 4), SCHEMA)], ignore_index=True)
    front = input_graph(SCHEMA, internal_prefix(NAMES), 20, 10)
    onnx.checker.check_model(front, full_check=True)
    (got,) = ort.InferenceSession(front.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, onnx_inputs(frame, SCHEMA))
    want = encode_frame(frame, SCHEMA)
    np.testing.assert_array_equal(got, want)  # NaN where NaN, exact elsewhere
    city = want[:, NAMES.index("city name")]
    assert UNKNOWN in city and MISSING in city and np.isnan(want[:, NAMES.index("area m²")]).any()


def test_edge_rows_are_missing_empty_and_unseen():
    rows = edge_rows(raw_frame(5, 0), SCHEMA)
    assert len(rows) == len(EDGE_ROWS) == 3
    assert list(category_keys(rows["city name"])) == ["", "", "fitline-unseen-category"]
    assert rows["area m²"].isna().tolist() == [True, True, False]
    assert rows["listed"].isna().tolist() == [True, True, False]


# ---------------------------------------------------------------------------- the export


@pytest.mark.parametrize("case", ["regression", "classification"])
def test_one_file_one_input_per_column_and_the_schema_in_metadata(request, case):
    out, metrics, _, cfg, _ = request.getfixturevalue(case)
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx"]
    for name in ("model.onnx", "model.int8.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
        proto = onnx.load(str(out / name))
        assert [i.name for i in proto.graph.input] == NAMES
        kinds = [i.type.tensor_type.elem_type for i in proto.graph.input]
        assert kinds == [onnx.TensorProto.STRING if c.kind in ("categorical", "boolean") else onnx.TensorProto.FLOAT
                         for c in SCHEMA]
        for i in proto.graph.input:
            batch, width = i.type.tensor_type.shape.dim
            assert batch.dim_param == "batch" and width.dim_value == 1
        domains = [o.domain for o in proto.opset_import]
        assert len(domains) == len(set(domains)) and "ai.onnx.ml" in domains  # no duplicate ai.onnx entry
        info = metadata(out / name)
        assert info["columns"] == [{"name": c.name, "kind": c.kind, "vocabulary": c.vocabulary} for c in SCHEMA]
        assert info["encoding"] == ENCODING and "days since 1970-01-01" in info["encoding"]["datetime"]
        assert info["feature_names"] == NAMES and info["task"] == case
    outputs = [o.name for o in onnx.load(str(out / "model.onnx")).graph.output]
    # a column is called `prediction`: the regression output steps aside, as the metadata says
    assert outputs == (["prediction_predicted"] if case == "regression" else ["probabilities", "label"])
    assert metadata(out / "model.onnx")["outputs"] == dict(zip(
        ["prediction"] if case == "regression" else ["probabilities", "label"], outputs, strict=True))
    assert metrics["inputs"] == "raw columns" and metrics["parity_rows"] == 120 + 3 and metrics["parity_edge_rows"] == 3


@pytest.mark.parametrize("case", ["regression", "classification"])
def test_parity_on_raw_rows_with_gaps_empty_strings_and_unseen_categories(request, case):
    out, metrics, model, _, test = request.getfixturevalue(case)
    assert metrics["parity_max_abs"] <= 1e-4 and metrics["parity_max_scaled"] <= 1.0
    assert metrics["test_metric"]["onnx_fp32"] == pytest.approx(metrics["test_metric"]["torch"], abs=1e-6)
    assert metrics["metric_drop"] <= 0.01
    rows = pd.concat([test, edge_rows(test, SCHEMA)], ignore_index=True)
    got = OnnxModel(out / "model.onnx").run(onnx_inputs(rows, SCHEMA))
    want = torch_out(model, encode_frame(rows, SCHEMA))
    if case == "classification":
        want = torch.softmax(torch.from_numpy(want), -1).numpy()
        np.testing.assert_array_equal(got["label"], want.argmax(axis=1))
    main = got["prediction"] if case == "regression" else got["probabilities"]
    assert np.isfinite(main).all()
    np.testing.assert_allclose(main, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", ["regression", "classification"])
def test_int8_quantizes_the_networks_matmul_gemm_and_leaves_the_front_alone(request, case):
    out = request.getfixturevalue(case)[0]
    fp32, int8 = (onnx.load(str(out / n)).graph for n in ("model.onnx", "model.int8.onnx"))
    kept = {n.SerializeToString() for n in int8.node}
    front = [n for n in fp32.node if not n.name.startswith(f"{internal_prefix(NAMES)}net/")]
    assert sorted({n.op_type for n in front}) == ["Concat", "LabelEncoder"]
    assert len(front) == 1 + sum(c.kind in ("categorical", "boolean") for c in SCHEMA)
    assert all(n.SerializeToString() in kept for n in front)  # byte for byte
    untouched = [n for n in fp32.node if n.op_type not in ("MatMul", "Gemm")]
    assert all(n.SerializeToString() in kept for n in untouched)
    ops = [n.op_type for n in int8.node]
    if case == "regression":  # dynamic: every MatMul/Gemm became an integer matmul
        assert "MatMulInteger" in ops and not {"MatMul", "Gemm"} & set(ops)
    else:  # static QDQ: what feeds a Gemm is quantised, the softmax and argmax are not
        assert "QuantizeLinear" in ops and ops[-2:] == ["Softmax", "ArgMax"]
        for node in int8.node:
            if node.op_type == "QuantizeLinear":
                (consumer,) = [n for n in int8.node if node.output[0] in n.input]
                assert consumer.op_type == "DequantizeLinear"


def test_a_model_that_does_not_impute_is_named_not_hidden(tmp_path):
    """NaN from torch itself on raw rows is the model's fault: one line, before any comparison."""
    model, cfg, _, test = hand_model("regression")
    plain = copy.deepcopy(model)
    with torch.no_grad():
        plain.encoder.num_fill.fill_(float("nan"))  # a missing number stays missing
    split = Split(encode_frame(test, SCHEMA), np.zeros(len(test), np.float32))
    with pytest.raises(ExportError, match=r"the torch model outputs NaN on \d+ of 123 raw rows \(first: test row \d+\): "
                                          r"it does not handle missing values"):
        onnx_export.export_model(ExportParams(latency_repeats=1), plain, cfg, {"test": split}, tmp_path, frames={"test": test})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match=r"a raw-row model is checked on the split's raw rows"):
        onnx_export.export_model(ExportParams(latency_repeats=1), model, cfg, {"test": split}, tmp_path)


# ------------------------------------------------------------------- predict on users' rows


def users_file(test: pd.DataFrame, target: str) -> pd.DataFrame:
    """The test rows as a user's CSV has them: an id, the target, dates and booleans as text."""
    df = test.copy()
    df["listed"] = df["listed"].dt.strftime("%Y-%m-%d")
    df.insert(0, "id", np.arange(len(df)))
    df[target] = 1.0
    df["note"] = "extra column"
    return df


def test_predict_takes_the_users_csv_rows_as_they_are(regression, tmp_path):
    out, _, model, _, test = regression
    users_file(test, "price").to_csv(tmp_path / "rows.csv", index=False)
    rows = read_frame(tmp_path / "rows.csv")  # text dates, "" read as NaN, booleans as bool
    preds = predict_frame(out / "model.onnx", rows)
    # extra columns and the target pass through; the `prediction` column is a feature, so the
    # prediction steps aside rather than clash with a column of the user's file
    assert list(preds.columns) == ["id", "price", "note", "prediction_predicted"]
    want = torch_out(model, encode_frame(test, SCHEMA))
    np.testing.assert_allclose(preds["prediction_predicted"], want, atol=1e-4, rtol=1e-5)
    int8 = predict_frame(out / "model.int8.onnx", rows)["prediction_predicted"]
    assert np.sqrt(np.mean((int8 - want) ** 2)) < 0.05 * want.std()


def test_predict_classification_with_a_target_called_label(classification, tmp_path):
    out, _, model, _, test = classification
    rows = users_file(test, "label")
    preds = predict_frame(out / "model.int8.onnx", rows)
    assert list(preds.columns) == ["id", "label", "note", "label_predicted", *(f"proba_{c}" for c in CLASSES)]
    assert (preds["label"] == 1.0).all()  # the user's column, untouched
    want = np.array(CLASSES)[torch_out(model, encode_frame(test, SCHEMA)).argmax(axis=1)]
    assert (preds["label_predicted"] == want).mean() >= 0.95
    assert len(predict_frame(out / "model.onnx", rows.iloc[:0])) == 0


def test_predict_errors_on_raw_rows_are_one_line(regression):
    out, _, _, _, test = regression
    with pytest.raises(DataError, match=r"^input: missing feature column\(s\) city name, listed; columns not in the "
                                        r"model: id, price, note$"):
        predict_frame(out / "model.onnx", users_file(test, "price").drop(columns=["city name", "listed"]))
    bad = users_file(test, "price").astype({"area m²": object})
    bad.loc[3, "area m²"] = "about 80"
    with pytest.raises(DataError, match=r"^input: column 'area m²' is numeric but has 1 non-numeric value\(s\), "
                                        r"e\.g\. 'about 80'$"):
        predict_frame(out / "model.onnx", bad)


def test_metadata_that_does_not_match_the_raw_graph_is_refused(regression, tmp_path):
    out = regression[0]
    proto = onnx.load(str(out / "model.onnx"))
    info = metadata(out / "model.onnx")
    info["columns"][1]["kind"] = "numeric"  # the graph takes strings there
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
    onnx.save_model(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(DataError, match=r"does not match its 'fitline' metadata \(inputs area m² \[N, 1\], city name "
                                        r"\[N, 1\], prediction \[N, 1\] tensor\(string\)"):
        OnnxModel(tmp_path / "m.onnx")


def test_fitline_predict_on_a_users_file_without_torch_and_one_line_errors(regression, tmp_path):
    out, _, _, _, test = regression
    users_file(test, "price").to_parquet(tmp_path / "rows.parquet")
    proc = run_cmd([sys.executable, "-X", "importtime", str(FITLINE), "predict", "--model", str(out / "model.int8.onnx"),
                    "--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "preds.csv")], tmp_path)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "import time:" in line}
    assert "onnxruntime" in imported and "torch" not in imported
    assert list(pd.read_csv(tmp_path / "preds.csv").columns) == ["id", "price", "note", "prediction_predicted"]

    bad = users_file(test, "price").astype({"area m²": object})
    bad.loc[5, "area m²"] = "80 m²"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = run_cmd([str(FITLINE), "predict", "--model", str(out / "model.onnx"), "--input", str(tmp_path / "bad.csv"),
                    "--output", str(tmp_path / "p.csv")], tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error" in line] == [
        f"fitline predict: error: {tmp_path / 'bad.csv'}: column 'area m²' is numeric but has 1 non-numeric "
        "value(s), e.g. '80 m²'"]
