"""ONNX-only prediction: predict_frame on hand-built graphs, its errors, and `fitline predict`
(the real console script) on a model exported by the export stage, without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages.core.errors import DataError
from stages.serving import onnx as onnx_export
from stages.serving.predict import METADATA_KEY, OnnxModel, predict_file, predict_frame, read_frame
from tests.conftest import run_cmd

FITLINE = Path(sys.executable).parent / "fitline"
FEATURES = ["a", "b", "c"]
W = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [3.0, 0.0, -1.0]], np.float32)  # (features, outputs)
B = np.array([0.1, 0.2, -0.3], np.float32)


def _save(path: Path, nodes, outputs, initializers, info) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    if info is not None:
        helper.set_model_props(model, {METADATA_KEY: json.dumps(info)})
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path))
    return path


DEFAULT = object()


def regression_onnx(path: Path, info=DEFAULT) -> Path:
    """prediction = features @ W[:, 0] + B[0], in the exporter's graph contract; `info` replaces
    the fitline metadata (None: no metadata)."""
    nodes = [helper.make_node("MatMul", ["features", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["prediction"])]
    out = [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])]
    meta = {"task": "regression", "feature_names": FEATURES, "target": "y", "classes": None}
    return _save(path, nodes, out, {"w": W[:, 0], "b": B[0]}, meta if info is DEFAULT else info)


def classification_onnx(path: Path) -> Path:
    nodes = [
        helper.make_node("Gemm", ["features", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=-1, keepdims=0),
    ]
    out = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
           helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])]
    meta = {"task": "classification", "feature_names": FEATURES, "target": "kind", "classes": ["cat", "dog", "eel"]}
    return _save(path, nodes, out, {"w": W, "b": B}, meta)


def rows(n: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 3)).astype(np.float32), columns=FEATURES)
    df.insert(0, "id", np.arange(n))
    return df


@pytest.fixture
def reg_model(tmp_path):
    return regression_onnx(tmp_path / "reg.onnx")


@pytest.fixture
def cls_model(tmp_path):
    return classification_onnx(tmp_path / "cls.onnx")


# ----------------------------------------------------------------------------- outputs


def test_regression_passes_non_features_through_and_adds_prediction(reg_model):
    df = rows()
    out = predict_frame(reg_model, df)
    assert list(out.columns) == ["id", "prediction"]
    assert out["id"].tolist() == list(range(5))
    expected = df[FEATURES].to_numpy(np.float32) @ W[:, 0] + B[0]
    np.testing.assert_allclose(out["prediction"], expected, rtol=1e-6)


def test_classification_gives_original_labels_and_probability_columns(cls_model):
    df = rows(8)
    out = predict_frame(cls_model, df)
    assert list(out.columns) == ["id", "label", "proba_cat", "proba_dog", "proba_eel"]
    logits = df[FEATURES].to_numpy(np.float32) @ W + B
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out[["proba_cat", "proba_dog", "proba_eel"]].to_numpy(), proba, rtol=1e-5)
    assert out["label"].tolist() == [["cat", "dog", "eel"][i] for i in proba.argmax(axis=1)]


def test_feature_column_order_and_int_dtypes_do_not_matter(reg_model):
    df = rows()
    shuffled = df[["c", "id", "a", "b"]].copy()
    shuffled["a"] = shuffled["a"].round().astype(np.int64)
    df["a"] = df["a"].round()
    np.testing.assert_allclose(predict_frame(reg_model, shuffled)["prediction"], predict_frame(reg_model, df)["prediction"])


def test_zero_rows_give_an_empty_frame_with_the_output_columns(cls_model):
    out = predict_frame(cls_model, rows(0))
    assert len(out) == 0 and list(out.columns) == ["id", "label", "proba_cat", "proba_dog", "proba_eel"]


# ------------------------------------------------------------------------------ errors


def test_missing_columns_name_the_missing_and_the_unexpected(reg_model):
    df = rows().rename(columns={"b": "B", "c": "cc"})
    with pytest.raises(DataError, match=r"missing feature column\(s\) b, c; columns not in the model: id, B, cc"):
        predict_frame(reg_model, df)


def test_non_numeric_and_missing_values_are_named(reg_model):
    df = rows()
    # numbers read as text (a CSV column with one odd cell elsewhere) are still numbers
    as_text = df.assign(b=df["b"].astype(str))
    np.testing.assert_allclose(predict_frame(reg_model, as_text)["prediction"], predict_frame(reg_model, df)["prediction"])
    # a value that is not a number: one error naming the column and the value
    bad = df.astype({"b": object})
    bad.loc[2, "b"] = "12,5 kg"
    with pytest.raises(DataError, match=r"^input: column 'b' is numeric but has 1 non-numeric value\(s\), e\.g\. '12,5 kg'$"):
        predict_frame(reg_model, bad)
    df = rows()
    df.loc[[1, 3], "c"] = np.nan
    with pytest.raises(DataError, match=r"missing or non-finite values in feature column\(s\) c \(2 rows\)"):
        predict_frame(reg_model, df)


def test_input_columns_named_like_outputs_are_kept_and_the_predictions_suffixed(reg_model, cls_model, caplog):
    """Refused before; now nothing is refused or overwritten: the input column keeps its name and
    values, the prediction column gets `_predicted` (again if that is taken too)."""
    df = rows().assign(prediction=1.0, prediction_predicted="mine")
    out = predict_frame(reg_model, df)
    assert list(out.columns) == ["id", "prediction", "prediction_predicted", "prediction_predicted_predicted"]
    assert (out["prediction"] == 1.0).all() and (out["prediction_predicted"] == "mine").all()
    np.testing.assert_allclose(out["prediction_predicted_predicted"], predict_frame(reg_model, rows())["prediction"])
    assert "prediction -> prediction_predicted_predicted" in caplog.text
    # a classification target called `label`, and a column that looks like a probability
    df = rows().assign(label="dog", proba_eel=0.5)
    out = predict_frame(cls_model, df)
    assert list(out.columns) == ["id", "label", "proba_eel", "label_predicted", "proba_cat", "proba_dog",
                                 "proba_eel_predicted"]
    assert (out["label"] == "dog").all() and set(out["label_predicted"]) <= {"cat", "dog", "eel"}


def test_missing_corrupt_and_foreign_model_files(tmp_path):
    with pytest.raises(DataError, match=r"model file not found"):
        OnnxModel(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a protobuf \x00\xff" * 10)
    with pytest.raises(DataError, match=r"bad\.onnx: not a readable ONNX model"):
        OnnxModel(bad)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(regression_onnx(tmp_path / "whole.onnx").read_bytes()[:-40])
    with pytest.raises(DataError, match=r"not a readable ONNX model"):
        OnnxModel(truncated)
    with pytest.raises(DataError, match=r"has no 'fitline' metadata \(not exported by fitline\)"):
        OnnxModel(regression_onnx(tmp_path / "foreign.onnx", info=None))
    with pytest.raises(DataError, match=r"malformed 'fitline' metadata"):
        OnnxModel(regression_onnx(tmp_path / "odd.onnx", info={"task": "regression"}))


def test_file_types_and_missing_input(reg_model, tmp_path):
    with pytest.raises(DataError, match=r"unsupported input file type '\.json'"):
        read_frame(tmp_path / "rows.json")
    with pytest.raises(DataError, match=r"input file not found"):
        read_frame(tmp_path / "rows.csv")
    rows().to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(DataError, match=r"unsupported output file type '\.xlsx'"):
        predict_file(reg_model, tmp_path / "rows.csv", tmp_path / "out.xlsx")
    assert not (tmp_path / "out.xlsx").exists()
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read parquet"):
        read_frame(tmp_path / "broken.parquet")


# ------------------------------------------------------ the console script, on real exports


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A classification MLP (untrained, scaled on its data) through the real export stage."""
    import torch

    from stages.core.contracts import ModelConfig
    from stages.core.params import ExportParams
    from stages.data.splits import Split
    from stages.training.models import build_model, fit_scaling

    names = ["x0", "x1", "x2", "x3"]
    cfg = ModelConfig.from_dict({"task": "classification", "feature_names": names, "target": "y", "classes": [10, 20, 30],
           "n_features": 4, "n_outputs": 3, "model": "mlp", "hidden": [8], "activation": "relu",
           "dropout": 0.0, "scaling": "standard"})
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 4)) * [1, 10, 100, 0.1] + 5).astype(np.float32)
    fit_scaling(model, x, None, "standard")
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    out = tmp_path_factory.mktemp("exported")
    onnx_export.export_model(ExportParams(latency_repeats=1), model, cfg, {"train": Split(x, y), "test": Split(x, y)}, out)
    df = pd.DataFrame(x, columns=names).assign(y=np.array([10, 20, 30])[y])
    return out, df


def test_fitline_predict_parquet_without_importing_torch(exported, tmp_path):
    out, df = exported
    df.to_parquet(tmp_path / "rows.parquet")
    proc = run_cmd([sys.executable, "-X", "importtime", str(FITLINE), "predict", "--model", str(out / "model.int8.onnx"),
                    "--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "preds.parquet")], tmp_path)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "import time:" in line}
    assert "onnxruntime" in imported and "pandas" in imported  # the check sees real imports
    assert "torch" not in imported and "prefect" not in imported
    preds = pd.read_parquet(tmp_path / "preds.parquet")
    assert list(preds.columns) == ["y", "label", "proba_10", "proba_20", "proba_30"]
    assert (preds["label"] == preds["y"]).mean() >= 0.99  # int8 labels match the fp32 model's own labels


def test_fitline_predict_csv_matches_in_process_fp32(exported, tmp_path):
    out, df = exported
    df.drop(columns="y").to_csv(tmp_path / "rows.csv", index=False)
    run_cmd([str(FITLINE), "predict", "--model", str(out / "model.onnx"), "--input", str(tmp_path / "rows.csv"),
             "--output", str(tmp_path / "preds.csv")], tmp_path)
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["label", "proba_10", "proba_20", "proba_30"]
    assert (preds["label"] == df["y"]).all()  # fp32 reproduces the torch model's argmax
    expected = predict_frame(out / "model.onnx", df.drop(columns="y"))
    np.testing.assert_allclose(preds[["proba_10", "proba_20", "proba_30"]], expected.iloc[:, 1:], rtol=1e-5)


def test_fitline_predict_errors_are_one_line_exit_1(exported, tmp_path):
    out, df = exported
    df.drop(columns=["x1"]).to_csv(tmp_path / "rows.csv", index=False)
    proc = run_cmd([str(FITLINE), "predict", "--model", str(out / "model.int8.onnx"), "--input",
                    str(tmp_path / "rows.csv"), "--output", str(tmp_path / "p.csv")], tmp_path, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"fitline predict: error: {tmp_path / 'rows.csv'}: missing feature column(s) x1; "
                      "columns not in the model: y"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "p.csv").exists()


def test_predict_module_never_imports_torch(tmp_path):
    model = regression_onnx(tmp_path / "reg.onnx")
    code = (
        "import sys\nimport flows.cli\nfrom stages.serving.predict import predict_frame\nimport pandas as pd\n"
        f"predict_frame({str(model)!r}, pd.DataFrame({{'a': [1.0], 'b': [2.0], 'c': [3.0]}}))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'prefect'))\n"
        "assert 'onnxruntime' in sys.modules\nprint(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_an_unwritable_output_is_one_line_exit_1(exported, tmp_path):
    """A ~100-line traceback before."""
    out, df = exported
    df.drop(columns="y").to_csv(tmp_path / "rows.csv", index=False)
    target = tmp_path / "no" / "such" / "folder" / "p.csv"
    (tmp_path / "no").write_text("a file where a folder should be")
    proc = run_cmd([str(FITLINE), "predict", "--model", str(out / "model.onnx"), "--input",
                    str(tmp_path / "rows.csv"), "--output", str(target)], tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "error" in x]
    assert line.startswith(f"fitline predict: error: {target}: cannot write the predictions: ")


def test_fitline_metadata_on_another_graph_is_refused_before_predicting(tmp_path):
    """Metadata copied onto a model whose graph takes something else crashed predict with a traceback."""
    path = regression_onnx(tmp_path / "m.onnx", info={"task": "regression", "feature_names": ["a", "b"],
                                                       "target": "y", "classes": None})
    with pytest.raises(DataError, match=r"m\.onnx: the graph \(inputs features \[N, 3\]; outputs prediction\) "
                                        r"does not match its 'fitline' metadata \(inputs features \[N, 2\]; "
                                        r"outputs prediction\)"):
        OnnxModel(path)
    wrong_task = regression_onnx(tmp_path / "t.onnx", info={"task": "classification", "feature_names": FEATURES,
                                                            "target": "y", "classes": [0, 1]})
    with pytest.raises(DataError, match=r"outputs label, probabilities\); export the model"):
        OnnxModel(wrong_task)


def test_header_only_and_duplicate_column_files_get_their_own_messages(tmp_path):
    (tmp_path / "empty.csv").write_text("a,b,c\n")
    with pytest.raises(DataError, match=r"empty\.csv: no rows \(only a header with 3 column\(s\)\)$"):
        read_frame(tmp_path / "empty.csv")
    pd.DataFrame({"a": [], "b": []}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"empty\.parquet: no rows"):
        read_frame(tmp_path / "empty.parquet")
    (tmp_path / "dupes.csv").write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DataError, match=r"dupes\.csv: duplicate column name\(s\) a; rename them"):
        read_frame(tmp_path / "dupes.csv")
