"""The export stage: ONNX export, parity, int8 quantisation and its budget, metrics, atomicity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
import yaml

from stages import generate
from stages.core.contracts import ModelConfig
from stages.core.errors import ExportError
from stages.core.params import DataParams, ExportParams, TrainParams
from stages.data.splits import Split, load_splits
from stages.serving import onnx as onnx_export
from stages.serving.predict import METADATA_KEY, OnnxModel
from stages.serving.quantize import calibration_rows, quantize_model
from stages.serving.rows import matrix_rows
from stages.training.loop import train_model
from stages.training.models import build_model, load_model, save_model
from tests.conftest import ROOT, subprocess_env

CLASSES = 3


def _trained(tmp: Path, kind: str):
    meta = generate.run(
        DataParams(kind=kind, n_samples=800, n_features=5, n_informative=3, n_classes=CLASSES,
                   noise=0.05 if kind == "classification" else 0.5, seed=1),
        tmp,
    )
    splits = load_splits(tmp, meta)
    result = train_model(
        TrainParams(hidden=(16,), epochs=60, batch_size=128, lr=0.01, device="cpu", early_stopping={"patience": None}),
        splits, meta,
    )
    return result.model, result.config, splits


@pytest.fixture(scope="module")
def regression(tmp_path_factory, one_torch_thread):
    """A trained regression MLP exported with dynamic int8: (out_dir, metrics, model, cfg, splits)."""
    tmp = tmp_path_factory.mktemp("reg")
    model, cfg, splits = _trained(tmp / "data", "friedman")
    metrics = onnx_export.export_model(ExportParams(quantization="dynamic", latency_repeats=3), model, cfg, splits, tmp / "models")
    return tmp / "models", metrics, model, cfg, splits


@pytest.fixture(scope="module")
def classification(tmp_path_factory, one_torch_thread):
    """A trained 3-class MLP exported with static (QDQ) int8."""
    tmp = tmp_path_factory.mktemp("cls")
    model, cfg, splits = _trained(tmp / "data", "classification")
    params = ExportParams(quantization="static", calibration_rows=200, latency_repeats=3)
    metrics = onnx_export.export_model(params, model, cfg, splits, tmp / "models")
    return tmp / "models", metrics, model, cfg, splits


# ------------------------------------------------------------------------ decision logic


def test_check_parity_is_absolute_plus_relative_and_names_the_worst_output():
    want = np.array([0.5, -2.0, 1000.0, 1e5], np.float32)
    # within atol at small outputs, within rtol x |output| at large ones: passes
    max_abs, scaled = onnx_export.check_parity(want + np.array([5e-5, -5e-5, 5e-3, 0.5], np.float32), want, 1e-4, 1e-5)
    assert max_abs == pytest.approx(0.5, rel=1e-3)
    assert scaled == pytest.approx(0.5 / (1e-4 + 1.0), rel=1e-3)
    # the same 5e-3 on a small output is a failure, and the message names that output
    with pytest.raises(ExportError, match=r"by 0\.005 where torch gives -2, over export\.parity_atol 0\.0001 "
                                          r"\+ export\.parity_rtol 1e-05 x \|output\|"):
        onnx_export.check_parity(want + np.array([0, 5e-3, 0, 0], np.float32), want, 1e-4, 1e-5)
    with pytest.raises(ExportError, match=r"by 0\.0002 .*parity_atol 0\.0001"):  # rtol 0: absolute only
        onnx_export.check_parity(want + np.array([2e-4, 0, 0, 0], np.float32), want, 1e-4, 0.0)
    with pytest.raises(ExportError):
        onnx_export.check_parity(np.array([np.nan, 1.0]), np.array([1.0, 1.0]), 1e-4, 1e-5)
    assert onnx_export.check_parity(np.array([]), np.array([]), 1e-4, 1e-5) == (0.0, 0.0)


def test_check_metric_drop_budget_is_inclusive_and_message_gives_both_numbers():
    assert onnx_export.check_metric_drop("accuracy", 0.6867, 0.6767, 0.01) == pytest.approx(0.01)
    assert onnx_export.check_metric_drop("r2", 0.80, 0.82, 0.0) == pytest.approx(-0.02)  # int8 better: fine
    with pytest.raises(ExportError, match=r"int8 test r2 0\.7000 vs fp32 0\.8000: drop 0\.1000 over export\.max_metric_drop 0\.05"):
        onnx_export.check_metric_drop("r2", 0.80, 0.70, 0.05)


def test_test_metric_r2_and_accuracy():
    y = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    assert onnx_export.test_metric("regression", y, y) == pytest.approx(1.0)
    assert onnx_export.test_metric("regression", y, np.full(4, 2.5, np.float32)) == pytest.approx(0.0)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    assert onnx_export.test_metric("classification", np.array([0, 1, 1]), proba) == pytest.approx(2 / 3)
    assert onnx_export.metric_name("regression") == "r2" and onnx_export.metric_name("classification") == "accuracy"


def test_latency_inputs_tile_small_test_splits_to_full_batches():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    inputs = onnx_export.latency_inputs(matrix_rows(x))
    assert inputs["batch_1"].x.shape == (1, 3) and inputs["batch_1024"].x.shape == (1024, 3)
    assert np.array_equal(inputs["batch_1024"].x[10:20], x)
    # the numeric graph's one input is the same matrix, row for row
    assert list(inputs["batch_1024"].feeds) == ["features"]
    assert np.array_equal(inputs["batch_1024"].feeds["features"], inputs["batch_1024"].x)


def test_calibration_rows_are_a_seeded_subset():
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    a, b = calibration_rows(x, 30), calibration_rows(x, 30)
    assert a.shape == (30, 2) and np.array_equal(a, b) and a.dtype == np.float32
    assert len(np.unique(a[:, 0])) == 30 and not np.array_equal(a, x[:30])
    assert calibration_rows(x, 1000).shape == (100, 2)


# --------------------------------------------------------------------- exported models


@pytest.mark.parametrize("case", ["regression", "classification"])
def test_single_file_model_passes_checker_with_dynamic_batch_and_metadata(request, case):
    out, _, _, cfg, _ = request.getfixturevalue(case)
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx"]  # no .data, no temp files
    for name in ("model.onnx", "model.int8.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
        proto = onnx.load(str(out / name))
        (inp,) = proto.graph.input
        assert inp.name == "features"
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_value == cfg.n_features
        info = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
        assert info["feature_names"] == cfg.feature_names and info["task"] == cfg.task
        assert info["target"] == "y" and info["classes"] == cfg.classes
    outputs = [o.name for o in onnx.load(str(out / "model.onnx")).graph.output]
    assert outputs == (["prediction"] if case == "regression" else ["probabilities", "label"])


def test_regression_parity_and_dynamic_int8_within_budget(regression):
    out, metrics, model, _, splits = regression
    assert metrics["quantization"] == "dynamic" and metrics["metric_name"] == "r2"
    assert 0 <= metrics["parity_max_abs"] <= 1e-4
    scores = metrics["test_metric"]
    assert scores["torch"] > 0.5  # a real model, so the int8 comparison means something
    assert scores["onnx_fp32"] == pytest.approx(scores["torch"], abs=1e-6)
    assert metrics["metric_drop"] == pytest.approx(scores["onnx_fp32"] - scores["onnx_int8"])
    assert metrics["metric_drop"] <= 0.01
    # batch sizes other than the export example's run, and match torch
    x = splits["test"].x
    fp32 = OnnxModel(out / "model.onnx")
    for n in (1, 7, len(x)):
        with torch.no_grad():
            ref = model(torch.from_numpy(x[:n].copy())).numpy()
        np.testing.assert_allclose(fp32.run(x[:n])["prediction"], ref, atol=1e-4)
    # dynamic int8 really is int8: MatMulInteger nodes on int8 weight matrices (not a smaller
    # file: this 5-16-1 model's graph, with the quantiser's scales and nodes, outweighs its weights)
    int8 = onnx.load(str(out / "model.int8.onnx")).graph
    ops = {n.op_type for n in int8.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops
    assert len([t for t in int8.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]) == 2
    assert metrics["size_ratio"] == pytest.approx(metrics["size_int8_bytes"] / metrics["size_fp32_bytes"])


def test_classification_parity_and_static_qdq_int8_within_budget(classification):
    out, metrics, model, _, splits = classification
    assert metrics["metric_name"] == "accuracy" and metrics["parity_output"] == "probabilities"
    assert metrics["parity_max_abs"] <= 1e-4
    assert metrics["test_metric"]["onnx_fp32"] > 0.6
    assert metrics["metric_drop"] <= 0.01
    x = splits["test"].x
    for name in ("model.onnx", "model.int8.onnx"):
        outs = OnnxModel(out / name).run(x)
        np.testing.assert_allclose(outs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
        assert np.array_equal(outs["label"], outs["probabilities"].argmax(axis=1))
        assert outs["label"].dtype == np.int64
    ops = [n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # softmax output is left in float: probabilities are not rounded to 256 levels
    assert ops[-2:] == ["Softmax", "ArgMax"]


def test_metrics_have_the_keys_the_gate_addresses(regression):
    metrics = regression[1]
    for key in ("size_fp32_bytes", "size_int8_bytes", "size_ratio", "metric_name", "metric_drop",
                "parity_max_abs", "quantization"):
        assert key in metrics
    assert set(metrics["test_metric"]) == {"torch", "onnx_fp32", "onnx_int8"}
    assert set(metrics["latency_ms"]) == {"torch_eager", "onnx_fp32", "onnx_int8"}
    for per_batch in metrics["latency_ms"].values():
        assert set(per_batch) == {"batch_1", "batch_1024"} and all(v > 0 for v in per_batch.values())
    json.dumps(metrics, allow_nan=False)  # strict JSON, as write_json needs


@pytest.mark.parametrize("mode", ["none", "dynamic", "static"])
def test_quantize_model_modes(regression, tmp_path, mode):
    out, _, _, _, splits = regression
    dest = tmp_path / "q.onnx"
    quantize_model(out / "model.onnx", dest, mode, calibration_rows(splits["train"].x, 100))
    if mode == "none":
        assert dest.read_bytes() == (out / "model.onnx").read_bytes()
    else:
        onnx.checker.check_model(str(dest), full_check=True)
    m = OnnxModel(dest)  # metadata carried over
    assert m.feature_names == regression[3].feature_names
    pred = m.run(splits["test"].x)["prediction"]
    ref = OnnxModel(out / "model.onnx").run(splits["test"].x)["prediction"]
    # root-mean-square, not max: static int8 saturates rows outside the calibrated range
    assert np.sqrt(np.mean((pred - ref) ** 2)) < 0.1 * ref.std()


def test_static_quantization_without_calibration_rows_fails(regression, tmp_path):
    with pytest.raises(ExportError, match="calibration rows"):
        quantize_model(regression[0] / "model.onnx", tmp_path / "q.onnx", "static", np.zeros((0, 5), np.float32))


# ------------------------------------------------------------------------ failure paths


def _good_artifacts(out: Path, src: Path) -> dict[str, bytes]:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "model.int8.onnx"):
        shutil.copyfile(src / name, out / name)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_broken_parity_fails_and_keeps_the_good_models(regression, tmp_path, monkeypatch):
    src, _, model, cfg, splits = regression
    out = tmp_path / "models"
    before = _good_artifacts(out, src)
    perturbed = build_model(cfg)
    perturbed.load_state_dict(model.state_dict())
    perturbed.eval()
    real_export = onnx_export.export_onnx

    def export_then_drift(m, c, dest, opset, exporter):
        real_export(m, c, dest, opset, exporter)
        with torch.no_grad():  # the torch model changes after export: ONNX no longer matches it
            next(p for p in m.parameters() if p.ndim == 1).add_(0.01)

    monkeypatch.setattr(onnx_export, "export_onnx", export_then_drift)
    with pytest.raises(ExportError, match=r"differs from torch on the test split by .* over export\.parity_atol 0\.0001"):
        onnx_export.export_model(ExportParams(latency_repeats=1), perturbed, cfg, splits, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, no temp files left


def _scale_sensitive_linear():
    """A linear model on unscaled features: x0 is tiny but carries a huge weight, so per-tensor
    int8 rounds the other weights (and x0's activations) away. The target is the fp32 model's
    own output, so fp32 scores R² = 1 and int8 clearly less."""
    names = [f"x{i}" for i in range(4)]
    cfg = ModelConfig.from_dict({"task": "regression", "feature_names": names, "target": "y", "classes": None, "n_features": 4,
           "n_outputs": 1, "model": "linear", "hidden": [], "activation": "relu", "dropout": 0.0, "scaling": "none"})
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.net[-1].weight.copy_(torch.tensor([[1000.0, 1.0, -1.0, 0.5]]))
    rng = np.random.default_rng(0)

    def split(n):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        x[:, 0] *= 1e-3
        with torch.no_grad():
            y = model(torch.from_numpy(x)).numpy()
        return Split(x=x, y=y)

    return model, cfg, {"train": split(200), "test": split(200)}


def test_int8_metric_drop_over_budget_fails_with_both_numbers_and_keeps_models(regression, tmp_path):
    out = tmp_path / "models"
    before = _good_artifacts(out, regression[0])
    model, cfg, splits = _scale_sensitive_linear()
    with pytest.raises(ExportError, match=r"int8 test r2 (\S+) vs fp32 1\.0000: drop \S+ over export\.max_metric_drop 0\.01") as err:
        onnx_export.export_model(ExportParams(quantization="dynamic", latency_repeats=1), model, cfg, splits, out)
    assert float(err.value.args[0].split()[3]) < 0.99
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow  # one more export; quantize_model's `none` mode is covered in the default run
def test_quantization_none_writes_an_identical_int8_copy(tmp_path):
    model, cfg, splits = _scale_sensitive_linear()  # unquantisable, so `none` is the way out
    metrics = onnx_export.export_model(ExportParams(quantization="none", latency_repeats=1), model, cfg, splits, tmp_path)
    assert (tmp_path / "model.int8.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
    assert metrics["int8_is_fp32_copy"] is True and metrics["metric_drop"] == 0.0 and metrics["size_ratio"] == 1.0


# ------------------------------------------------------------------------- end to end

E2E_PARAMS = """\
data: {kind: classification, n_samples: 1500, n_features: 6, n_informative: 4, n_classes: 3, noise: 0.05, seed: 5}
validate: {min_rows: 1}
train: {hidden: [16], epochs: 15, batch_size: 128, lr: 0.01, checkpoint_every: 5, device: cpu}
evaluate: {overfit_gap: 0.3}
export: {quantization: static, calibration_rows: 500, latency_repeats: 3}
"""


@pytest.mark.slow
def test_dvc_repro_exports_serves_and_a_failed_export_keeps_the_models(tmp_path):
    from tests.conftest import make_pipeline_repo, run_cmd

    repo = make_pipeline_repo(tmp_path / "repo", E2E_PARAMS)
    run_cmd(["dvc", "repro", "export"], repo)
    metrics = json.loads((repo / "metrics/export.json").read_text())
    assert metrics["quantization"] == "static" and metrics["metric_name"] == "accuracy"
    assert metrics["parity_max_abs"] <= 1e-4 and metrics["metric_drop"] <= 0.01
    run_cmd(["fitline", "predict", "--model", "models/model.int8.onnx", "--input", "data/test.parquet",
             "--output", "preds.csv"], repo)
    preds = pd.read_csv(repo / "preds.csv")
    assert list(preds.columns) == ["y", "label", "proba_0", "proba_1", "proba_2"]
    assert (preds["label"] == preds["y"]).mean() == pytest.approx(metrics["test_metric"]["onnx_int8"])
    assert "export" not in run_cmd(["dvc", "status", "export"], repo).stdout  # up to date

    good = {p: (repo / p).read_bytes() for p in ("models/model.onnx", "models/model.int8.onnx", "metrics/export.json")}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["export"].update(parity_atol=1.0e-12, parity_rtol=0.0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cmd(["dvc", "repro", "export"], repo, check=False)
    assert proc.returncode != 0
    assert "fitline export: error: ONNX fp32 output differs from torch" in proc.stderr + proc.stdout
    assert {p: (repo / p).read_bytes() for p in good} == good  # persist + atomic: still servable


@pytest.mark.parametrize("exporter", ["direct", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_exported_bytes_do_not_depend_on_the_checkouts_path(regression, tmp_path, exporter):
    """The dynamo exporter's debug metadata carried the checkout's and the venv's absolute paths
    (~30 times): the same model.pt exported in two folders gave two files, and two dvc.locks.
    The same model exported twice, here and from a copy of the code elsewhere: the same bytes."""
    _, _, model, cfg, _ = regression
    save_model(tmp_path / "model.pt", model, cfg)
    copy = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "stages", copy / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys\nfrom pathlib import Path\nfrom stages.serving.onnx import export_onnx\n"
            "from stages.training.models import load_model\n"
            "model, cfg = load_model(sys.argv[1])\nexport_onnx(model, cfg, Path(sys.argv[2]), 20, sys.argv[3])\n"
            "print(sorted(m for m in ('torch.onnx', 'onnxscript', 'onnx_ir', 'stages.training.pruning') "
            "if m in sys.modules))\n")
    env = {**subprocess_env(), "PYTHONPATH": str(copy)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.pt"), str(tmp_path / "there.onnx"),
                           exporter], cwd=copy, env=env, check=True, capture_output=True, text=True)
    # torch.onnx and onnxscript cost about a second to import, and direct needs neither; the pruning
    # module (the training loop's imports) is for export.prune alone
    assert proc.stdout.strip() == ("[]" if exporter == "direct" else "['onnx_ir', 'onnxscript', 'torch.onnx']")
    for name in ("here.onnx", "again.onnx"):
        onnx_export.export_onnx(*load_model(tmp_path / "model.pt"), tmp_path / name, 20, exporter)
    here, there = (tmp_path / "here.onnx").read_bytes(), (tmp_path / "there.onnx").read_bytes()
    assert str(copy).encode() not in there and str(ROOT).encode() not in here
    assert here == there == (tmp_path / "again.onnx").read_bytes()
