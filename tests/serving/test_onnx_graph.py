"""The directly built ONNX graph (stages/serving/onnx_graph.py): parity with torch for every kind
of model fitline builds, the same interface as the dynamo exporter's graph, refusal of anything
else, deterministic bytes, int8 quantisation (tests/serving/test_export.py: the same bytes from
another folder, and no torch.onnx imported on the way)."""

from __future__ import annotations

import dataclasses
from typing import get_args

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from torch import nn

from stages.core.contracts import Column, ModelConfig
from stages.core.errors import ExportError
from stages.core.params import Exporter, ExportParams
from stages.data.encoding import encode_frame, onnx_inputs
from stages.data.splits import Split
from stages.serving import onnx as onnx_export
from stages.serving.onnx_graph import Graph, build_network
from stages.serving.predict import OnnxModel
from stages.serving.quantize import quantize_model
from stages.training.models import FitlineModel, build_model, fit_scaling, load_model, save_model

# every input kind of the raw-row layer: numbers with and without gaps (indicator or not), dates
# with gaps (parts and weekday), a small vocabulary (one-hot), a large one (embedding), a boolean
SCHEMA = [
    Column("gappy", "numeric", 0.1),
    Column("full", "numeric", 0.0),
    Column("listed", "datetime", 0.1),
    Column("colour", "categorical", 0.1, ["red", "green", "blue"]),
    Column("shop", "categorical", 0.0, [f"shop{i}" for i in range(40)]),
    Column("fresh", "boolean", 0.0, ["False", "True"]),
]


def raw_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows as users send them: gaps, "" and categories no vocabulary holds."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "gappy": rng.normal(50, 10, n),
        "full": rng.normal(0, 1, n),
        "listed": pd.Timestamp("2022-01-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 700, n), unit="D"),
        "colour": rng.choice(np.array(["red", "green", "blue", "", None, "mauve"], dtype=object), n),
        "shop": rng.choice(np.array([f"shop{i}" for i in range(42)], dtype=object), n),
        "fresh": rng.choice([True, False], n),
    })
    df.loc[rng.random(n) < 0.15, "gappy"] = np.nan
    df.loc[rng.random(n) < 0.15, "listed"] = pd.NaT
    return df


def make_model(task: str = "regression", *, model: str = "mlp", activation: str = "relu", classes: int = 3,
               raw: bool = False, transform: str | None = None, dropout: float = 0.0, seed: int = 0):
    """A seeded model with its scaling (and medians) fitted on random rows, its config, and rows
    to run it on: (model, cfg, encoded matrix, raw frame or None)."""
    names = [c.name for c in SCHEMA] if raw else [f"x{i}" for i in range(4)]
    labels = list(range(classes)) if task == "classification" else None
    cfg = ModelConfig.from_dict({
        "task": task, "feature_names": names, "target": "y", "classes": labels, "n_features": len(names),
        "n_outputs": classes if labels else 1, "model": model, "hidden": [8, 6] if model == "mlp" else [],
        "activation": activation, "dropout": dropout, "scaling": "standard", "target_transform": transform,
        "columns": [dataclasses.asdict(c) for c in SCHEMA] if raw else None})
    net = build_model(cfg, generator=torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    frame = raw_frame(300, seed) if raw else None
    x = encode_frame(frame, SCHEMA) if raw else rng.normal(3.0, 2.0, (300, 4)).astype(np.float32)
    fit_scaling(net, x, np.exp(rng.normal(size=len(x))) if task == "regression" else None, "standard")
    with torch.no_grad():  # a linear model starts at zero: give it weights that show in the outputs
        for layer in (m for m in net.modules() if isinstance(m, nn.Linear)):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(seed)))
            layer.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    return net.eval(), cfg, x, frame


def torch_outputs(model: nn.Module, task: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out if task == "regression" else torch.softmax(out, -1)).numpy()


def run_graph(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


CASES = {
    "linear-regression": {"model": "linear"},
    "linear-classification-2": {"task": "classification", "model": "linear", "classes": 2},
    "mlp-relu-regression": {},
    "mlp-gelu-regression": {"activation": "gelu"},
    "mlp-tanh-classification-3": {"task": "classification", "activation": "tanh"},
    "mlp-gelu-classification-2": {"task": "classification", "activation": "gelu", "classes": 2},
    "mlp-regression-log1p": {"transform": "log1p"},
    "mlp-dropout": {"dropout": 0.3},
    "raw-regression-log1p-gelu": {"raw": True, "transform": "log1p", "activation": "gelu"},
    "raw-classification-2": {"task": "classification", "raw": True, "classes": 2},
    "raw-classification-3-tanh": {"task": "classification", "raw": True, "activation": "tanh"},
}


@pytest.mark.parametrize("opset", [18, 20])  # 18: no Gelu op yet, written out with Erf
@pytest.mark.parametrize("case", list(CASES))
def test_direct_graph_matches_torch_within_the_stages_tolerance(case, opset):
    model, cfg, x, _ = make_model(**CASES[case])
    proto = build_network(model, cfg, opset)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == (["prediction"] if cfg.task == "regression"
                                                    else ["probabilities", "label"])
    want = torch_outputs(model, cfg.task, x)
    assert np.isfinite(want).all() and want.std() > 1e-3  # outputs that can tell a wrong graph
    for rows in (slice(0, 1), slice(None)):  # batch 1 and the whole set: the batch is dynamic
        got = run_graph(proto, {"features": x[rows]})
        max_abs, _ = onnx_export.check_parity(got[0], want[rows], 1e-4, 1e-5)  # the stage's defaults
        assert max_abs < 1e-4
        if cfg.task == "classification":
            assert got[1].dtype == np.int64 and np.array_equal(got[1], got[0].argmax(axis=1))


def test_an_exact_and_a_tanh_gelu_differ_and_each_matches_torch():
    model, cfg, x, _ = make_model(activation="gelu")
    outputs = []
    for approximate in ("none", "tanh"):
        model.net[1].approximate = model.net[3].approximate = approximate
        want = torch_outputs(model, "regression", x)
        for opset in (18, 20):
            (got,) = run_graph(build_network(model, cfg, opset), {"features": x})
            onnx_export.check_parity(got, want, 1e-4, 1e-5)
        outputs.append(want)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4  # the approximation shows: the test can tell


@pytest.mark.slow  # a dynamo export: about 4 s alone, 15 s on a busy host
def test_the_same_interface_and_outputs_as_the_dynamo_graph(tmp_path):
    """Both exporters' files: the same inputs, outputs (names, types, shapes), metadata and
    opsets, and outputs that agree, on raw rows with gaps, "" and unseen categories."""
    model, cfg, _, frame = make_model("classification", raw=True)
    protos = {}
    for exporter in get_args(Exporter):
        onnx_export.export_onnx(model, cfg, tmp_path / f"{exporter}.onnx", 20, exporter)
        protos[exporter] = onnx.load(str(tmp_path / f"{exporter}.onnx"))
    direct, dynamo = protos["direct"], protos["dynamo"]
    assert list(direct.graph.input) == list(dynamo.graph.input)
    assert list(direct.graph.output) == list(dynamo.graph.output)
    assert list(direct.metadata_props) == list(dynamo.metadata_props)
    assert sorted(map(str, direct.opset_import)) == sorted(map(str, dynamo.opset_import))
    assert direct.ir_version == dynamo.ir_version
    feeds = onnx_inputs(frame, SCHEMA)
    got = {e: OnnxModel(tmp_path / f"{e}.onnx").run(feeds) for e in protos}
    np.testing.assert_allclose(got["direct"]["probabilities"], got["dynamo"]["probabilities"], atol=1e-6)
    assert np.array_equal(got["direct"]["label"], got["dynamo"]["label"])


# ----------------------------------------------------------------------------- refusals


class Doubled(FitlineModel):
    """A FitlineModel whose forward is not the one the builder writes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_an_unknown_module_is_refused_with_the_param_that_exports_it():
    model, cfg, _, _ = make_model()
    hint = r"; set export\.exporter: dynamo to trace it instead$"
    with pytest.raises(ExportError, match=r"^export\.exporter direct cannot build the ONNX graph of a Sequential "
                                          r"module \(it builds fitline's FitlineModel only\)" + hint):
        build_network(nn.Sequential(nn.Linear(4, 1)).eval(), cfg, 20)
    doubled = Doubled(cfg)
    doubled.load_state_dict(model.state_dict())
    with pytest.raises(ExportError, match=r"of a Doubled module"):
        build_network(doubled.eval(), cfg, 20)
    model.net[1] = nn.SiLU()
    with pytest.raises(ExportError, match=r"of layer net\.1, a SiLU" + hint):
        build_network(model, cfg, 20)
    model.net[1] = nn.GELU()
    model.net[1].approximate = "erf-table"
    with pytest.raises(ExportError, match=r"of layer net\.1, GELU\(approximate='erf-table'\)"):
        build_network(model, cfg, 20)
    raw_model, raw_cfg, _, _ = make_model(raw=True)
    with pytest.raises(ExportError, match=r"a model that has a raw-row input layer while its config's columns"):
        build_network(raw_model, dataclasses.replace(raw_cfg, columns=None), 20)
    model, cfg, _, _ = make_model()
    with pytest.raises(ExportError, match=r"a model for task 'regression' \(config: 'classification'\)"):
        build_network(model, dataclasses.replace(cfg, task="classification"), 20)
    with pytest.raises(ExportError, match=r"a network with 1 outputs \(config: 2\)"):
        build_network(model, dataclasses.replace(cfg, n_outputs=2), 20)


def test_a_refused_module_fails_the_export_in_one_line_and_writes_nothing(tmp_path):
    model, cfg, x, _ = make_model()
    wrapped = nn.Sequential(model).eval()
    splits = {"test": Split(x, torch_outputs(model, "regression", x))}
    with pytest.raises(ExportError, match=r"^export\.exporter direct cannot build .* a Sequential module"):
        onnx_export.export_model(ExportParams(latency_repeats=1), wrapped, cfg, splits, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a dynamo export
def test_the_dynamo_exporter_exports_what_the_direct_one_refuses(tmp_path):
    model, cfg, x, _ = make_model()
    wrapped = nn.Sequential(model).eval()
    splits = {"test": Split(x, torch_outputs(model, "regression", x))}
    metrics = onnx_export.export_model(ExportParams(exporter="dynamo", latency_repeats=1), wrapped, cfg, splits,
                                       tmp_path)
    assert metrics["parity_max_scaled"] <= 1.0


def test_exporters_are_keyed_by_their_literal():
    assert tuple(onnx_export.EXPORTERS) == get_args(Exporter)
    model, cfg, _, _ = make_model()
    with pytest.raises(ValueError, match=r"export\.exporter: unknown exporter 'jit' \(allowed: direct, dynamo\)"):
        onnx_export.export_network(model, cfg, 20, "jit")


# ------------------------------------------------------------ determinism, int8, imports


def test_graph_reuses_an_identical_op_or_constant_and_nothing_else():
    g = Graph()
    cols = g.const("num_cols", [0, 2])
    assert g.const("flag_cols", [0, 2]) == cols and g.const("other", [0, 1]) != cols
    assert g.const("half", 0.5) != g.const("halves", torch.tensor([0.5, 0.5]))
    first = g.op("Gather", ["x", cols], axis=1)
    assert g.op("Gather", ["x", cols], axis=1) == first
    assert g.op("Gather", ["x", cols], axis=0) != first  # other attributes: another op
    assert g.op("IsNaN", [first]) == g.op("IsNaN", [first])
    assert [n.op_type for n in g.nodes] == ["Gather", "Gather", "IsNaN"] and len(g.initializers) == 4


def test_the_same_weights_give_the_same_bytes(tmp_path):
    model, cfg, _, _ = make_model("classification", raw=True)
    save_model(tmp_path / "model.pt", model, cfg)
    reloaded, reloaded_cfg = load_model(tmp_path / "model.pt")
    first = build_network(model, cfg, 20).SerializeToString()
    assert build_network(model, cfg, 20).SerializeToString() == first
    assert build_network(reloaded, reloaded_cfg, 20).SerializeToString() == first
    other, _, _, _ = make_model("classification", raw=True, seed=1)
    assert build_network(other, cfg, 20).SerializeToString() != first


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_raw_row_model_with_embeddings_exports_and_quantizes(tmp_path, task):
    """The stage end to end on the direct graph of a raw-row model (embedding, one-hots, dates,
    gaps): parity on raw rows plus edge rows, dynamic int8 within budget; static int8 of the
    same graph calibrated on raw rows."""
    model, cfg, x, frame = make_model(task, raw=True, activation="gelu")
    out = torch_outputs(model, task, x)
    y = out.argmax(axis=1) if task == "classification" else out
    # random weights put many rows near a class boundary, where int8 flips a few: a wider budget
    params = ExportParams(latency_repeats=1, max_metric_drop=0.05)
    metrics = onnx_export.export_model(params, model, cfg, {"test": Split(x, y)}, tmp_path, frames={"test": frame})
    assert metrics["parity_max_scaled"] <= 1.0 and metrics["parity_edge_rows"] == 3
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops and "Gather" in ops  # the embedding stays fp32
    quantize_model(tmp_path / "model.onnx", tmp_path / "static.onnx", "static", onnx_inputs(frame, SCHEMA))
    static = OnnxModel(tmp_path / "static.onnx")
    assert static.info == OnnxModel(tmp_path / "model.onnx").info  # metadata carried over
    got = static.run(onnx_inputs(frame, SCHEMA))["prediction" if task == "regression" else "probabilities"]
    assert np.sqrt(np.mean((got - out) ** 2)) < 0.1 * out.std()
