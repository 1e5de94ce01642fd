"""The network's ONNX graph built directly from a FitlineModel's weights (export.exporter `direct`).

fitline's models are a known stack (stages/training/models.py and preprocessing.py): optionally
the raw-row input layer (imputation, missing indicators, date parts, weekday and category
one-hots, embeddings), the standardisation, Linear layers with ReLU / GELU / tanh between them
(dropout is the identity at inference), and on top the target's de-standardisation and inverse
transform (regression) or softmax and argmax (classification). This module writes those ops
with onnx.helper, one for each torch op of the model's forward and in the same order, so ONNX
Runtime computes what torch does (the export stage's parity check holds it to that), in the same
graph the dynamo exporter gives: input `features` [batch, n_features], outputs
`task_outputs(task)`, and no value_info (ORT's quantiser re-infers shapes).

Only modules it knows are built: any other module, layer or option is an ExportError naming it,
never a graph that computes something else (export.exporter `dynamo` traces any module). No
torch.onnx here: building takes milliseconds where the dynamo export took seconds, and the
graph's bytes follow from the weights alone (fixed value names, no paths, no versions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from stages.core.contracts import ModelConfig
from stages.core.errors import ExportError
from stages.data.encoding import UNKNOWN
from stages.serving.predict import INPUT_NAME, task_outputs
from stages.serving.raw_graph import BATCH
from stages.training.models import FitlineModel, SeededDropout
from stages.training.preprocessing import DATE_PARTS, DAYS_PER_YEAR, WEEKDAY_OFFSET, RawRowEncoder

GRAPH_NAME = "main_graph"  # the dynamo exporter's name for it
IR_VERSION = 10  # the dynamo exporter's (torch 2.13); raw_graph's front takes the network's
PRODUCER = "fitline"
INT64_MAX = np.iinfo(np.int64).max

# layers of FitlineModel.net -> op (None: the identity at inference)
ACTIVATION_OPS: dict[type[nn.Module], str | None] = {
    nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.GELU: "Gelu", SeededDropout: None, nn.Dropout: None, nn.Identity: None,
}
GELU_APPROXIMATIONS = ("none", "tanh")
INVERSE_TRANSFORMS = ("none", "log1p")  # target transforms whose inverse _outputs writes
FIRST_GELU_OPSET = 20  # before it, GELU is written out with Erf / Tanh


class Graph:
    """Nodes and initializers under fixed, sequential names (the same model gives the same bytes).

    An op already added with the same inputs and attributes, or a constant with the same values,
    is reused rather than added again: e.g. the missing indicators of the numeric columns gather
    and test the columns that imputation already did (as the dynamo exporter's optimiser merges)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._ops: dict[tuple[str, tuple[str, ...], str], str] = {}

    def const(self, name: str, value: torch.Tensor | float | Sequence[int]) -> str:
        """An initializer: a tensor's values as float32, a float as a float32 scalar, ints as int64."""
        if isinstance(value, torch.Tensor):
            array = value.detach().to("cpu", torch.float32).numpy()
        else:
            array = np.array(value, dtype=np.float32 if isinstance(value, float) else np.int64)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: object) -> str:
        """Add one node; return its output's name (`output`, else the next n<i>_<op>)."""
        key = (op_type, tuple(inputs), repr(sorted(attrs.items())))
        if output is None and key in self._ops:
            return self._ops[key]
        name = output or f"n{len(self.nodes)}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=f"node_{name}", **attrs))
        self._ops[key] = name
        return name

    def concat(self, parts: list[str], axis: int = 1) -> str | None:
        """torch.cat of the parts (None for none, the part itself for one), as _joined does."""
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else self.op("Concat", parts, axis=axis)


# ------------------------------------------------------------------------------ checks


def _refuse(what: str) -> ExportError:
    return ExportError(f"export.exporter direct cannot build the ONNX graph of {what}; set export.exporter: dynamo "
                       "to trace it instead")


def check_buildable(model: nn.Module, cfg: ModelConfig) -> None:
    """An ExportError unless `model` is a FitlineModel this module builds exactly, matching `cfg`."""
    if model.training:
        raise ValueError("build_network: the model must be in eval mode (dropout is left out of the graph)")
    if type(model) is not FitlineModel:
        raise _refuse(f"a {type(model).__name__} module (it builds fitline's FitlineModel only)")
    encoder = model.encoder
    if encoder is not None and type(encoder) is not RawRowEncoder:
        raise _refuse(f"an input layer of type {type(encoder).__name__}")
    if (encoder is None) != (cfg.columns is None):
        has = "has no" if encoder is None else "has a"
        raise _refuse(f"a model that {has} raw-row input layer while its config's columns say otherwise")
    if model.task != cfg.task or model.task not in ("regression", "classification"):
        raise _refuse(f"a model for task {model.task!r} (config: {cfg.task!r})")
    if model.task == "regression" and model.target_transform not in INVERSE_TRANSFORMS:
        raise _refuse(f"target transform {model.target_transform!r}")
    if type(model.net) is not nn.Sequential or not len(model.net) or type(model.net[-1]) is not nn.Linear:
        raise _refuse("a network that is not an nn.Sequential ending in a Linear layer")
    for i, layer in enumerate(model.net):
        if type(layer) is not nn.Linear and type(layer) not in ACTIVATION_OPS:
            raise _refuse(f"layer net.{i}, a {type(layer).__name__}")
        if type(layer) is nn.GELU and layer.approximate not in GELU_APPROXIMATIONS:
            raise _refuse(f"layer net.{i}, GELU(approximate={layer.approximate!r})")
    if model.net[-1].out_features != int(cfg.n_outputs):
        raise _refuse(f"a network with {model.net[-1].out_features} outputs (config: {cfg.n_outputs})")


# ------------------------------------------------------------------------- the layers


def _prepare(g: Graph, enc: RawRowEncoder, x: str) -> tuple[str | None, str | None]:
    """RawRowEncoder.prepare: (continuous block, codes), op for op."""
    continuous, codes = [], []
    if enc.n_num:
        v = g.op("Gather", [x, g.const("encoder.num_cols", enc.num_cols.tolist())], axis=1)
        continuous.append(g.op("Where", [g.op("IsNaN", [v]), g.const("encoder.num_fill", enc.num_fill), v]))
    if enc.n_flags:
        flags = g.op("Gather", [x, g.const("encoder.flag_cols", enc.flag_cols.tolist())], axis=1)
        codes.append(g.op("Cast", [g.op("IsNaN", [flags])], to=TensorProto.FLOAT))
    if enc.n_dates:
        continuous.append(_date_parts(g, enc, x, codes))
    if enc.n_cats:
        c = g.op("Gather", [x, g.const("encoder.cat_cols", enc.cat_cols.tolist())], axis=1)
        clamped = g.op("Clip", [c, g.const("encoder.zero", 0.0)])
        slot = g.op("Floor", [g.op("Min", [clamped, g.const("encoder.cat_max", enc.cat_max)])])
        clean = g.op("Where", [g.op("Equal", [slot, c]), c, g.const("encoder.unknown", float(UNKNOWN))])
        codes.append(g.op("Add", [clean, g.const("encoder.cat_offset", enc.cat_offset)]))
    return g.concat(continuous), g.concat(codes)


def _date_parts(g: Graph, enc: RawRowEncoder, x: str, codes: list[str]) -> str:
    """The dates' continuous parts [N, 5 * n_dates] (day-major, as torch.stack(.., 2).flatten(1));
    appends the weekday codes to `codes`."""
    d = g.op("Gather", [x, g.const("encoder.date_cols", enc.date_cols.tolist())], axis=1)
    d = g.op("Where", [g.op("IsNaN", [d]), g.const("encoder.date_fill", enc.date_fill), d])
    whole = g.op("Floor", [d])
    year = g.op("Mul", [d, g.const("encoder.year_radians", 2 * math.pi / DAYS_PER_YEAR)])
    day = g.op("Mul", [g.op("Sub", [d, whole]), g.const("encoder.day_radians", 2 * math.pi)])
    axis = g.const("encoder.stack_axis", [2])
    parts = [d, g.op("Sin", [year]), g.op("Cos", [year]), g.op("Sin", [day]), g.op("Cos", [day])]
    stacked = g.op("Concat", [g.op("Unsqueeze", [p, axis]) for p in parts], axis=2)
    flat = g.op("Reshape", [stacked, g.const("encoder.date_shape", [-1, len(DATE_PARTS) * enc.n_dates])])
    k = g.op("Add", [whole, g.const("encoder.weekday_offset", float(WEEKDAY_OFFSET))])
    seven = g.const("encoder.week", 7.0)
    weeks = g.op("Floor", [g.op("Div", [k, seven])])
    codes.append(g.op("Sub", [k, g.op("Mul", [weeks, seven])]))
    return flat


def _slice(g: Graph, x: str, start: int, end: int, tag: str) -> str:
    """x[:, start:end] (end INT64_MAX: to the last column)."""
    bounds = [g.const(f"{tag}.start", [start]), g.const(f"{tag}.end", [end]), g.const(f"{tag}.axis", [1])]
    return g.op("Slice", [x, *bounds])


def _expand(g: Graph, enc: RawRowEncoder, p: str) -> str:
    """RawRowEncoder.expand: the dense columns, the one-hot slots, the embedding rows."""
    parts = [_slice(g, p, 0, enc.n_dense, "expand.dense")] if enc.n_dense else []
    if enc.n_slots:
        picked = g.op("Gather", [p, g.const("encoder.slot_position", enc.slot_position.tolist())], axis=1)
        hot = g.op("Equal", [picked, g.const("encoder.slot_value", enc.slot_value)])
        parts.append(g.op("Cast", [hot], to=TensorProto.FLOAT))
    if enc.embedding is not None:
        codes = _slice(g, p, -enc.n_embedded, INT64_MAX, "expand.embedded")
        rows = g.op("Reshape", [g.op("Cast", [codes], to=TensorProto.INT64), g.const("expand.flat", [-1])])
        table = g.const("encoder.embedding.weight", enc.embedding.weight)
        looked_up = g.op("Gather", [table, rows], axis=0)
        width = enc.embedding.embedding_dim * enc.n_embedded
        parts.append(g.op("Reshape", [looked_up, g.const("expand.embedded.shape", [-1, width])]))
    return g.concat(parts)


def _network_input(g: Graph, model: nn.Module) -> str:
    """FitlineModel.prepare then the input side of head: what net[0] takes."""

    def standardised(x: str) -> str:
        return g.op("Div", [g.op("Sub", [x, g.const("x_mean", model.x_mean)]), g.const("x_std", model.x_std)])

    if model.encoder is None:
        return standardised(INPUT_NAME)
    continuous, codes = _prepare(g, model.encoder, INPUT_NAME)
    parts = [] if continuous is None else [standardised(continuous)]
    parts += [] if codes is None else [codes]
    return _expand(g, model.encoder, g.concat(parts))


def _gelu(g: Graph, h: str, approximate: str, opset: int, tag: str) -> str:
    """Gelu (opset 20+), else its definition in older ops (exact: Erf; tanh: the tanh formula)."""
    if opset >= FIRST_GELU_OPSET:
        return g.op("Gelu", [h], approximate=approximate)
    half, one = g.const(f"{tag}.half", 0.5), g.const(f"{tag}.one", 1.0)
    if approximate == "none":
        inner = g.op("Erf", [g.op("Mul", [h, g.const(f"{tag}.rsqrt2", 1 / math.sqrt(2))])])
    else:
        cube = g.op("Mul", [g.op("Mul", [h, h]), h])
        poly = g.op("Add", [h, g.op("Mul", [cube, g.const(f"{tag}.c", 0.044715)])])
        inner = g.op("Tanh", [g.op("Mul", [poly, g.const(f"{tag}.k", math.sqrt(2 / math.pi))])])
    return g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [inner, one])])


def _network(g: Graph, net: nn.Sequential, h: str, opset: int) -> str:
    for i, layer in enumerate(net):
        if type(layer) is nn.Linear:
            weight, bias = g.const(f"net.{i}.weight", layer.weight), g.const(f"net.{i}.bias", layer.bias)
            h = g.op("Gemm", [h, weight, bias], alpha=1.0, beta=1.0, transA=0, transB=1)
        elif type(layer) is nn.GELU:
            h = _gelu(g, h, layer.approximate, opset, f"net.{i}")
        elif ACTIVATION_OPS[type(layer)] is not None:
            h = g.op(ACTIVATION_OPS[type(layer)], [h])
    return h


def _outputs(g: Graph, model: nn.Module, z: str) -> None:
    """FitlineModel.output plus ServingModel's softmax and argmax, under task_outputs' names."""
    if model.task == "classification":
        probabilities = g.op("Softmax", [z], "probabilities", axis=-1)
        g.op("ArgMax", [probabilities], "label", axis=-1, keepdims=0, select_last_index=0)
        return
    z = g.op("Squeeze", [z, g.const("output.axes", [-1])])
    scaled = g.op("Mul", [z, g.const("y_std", model.y_std)])
    if model.target_transform == "none":
        g.op("Add", [scaled, g.const("y_mean", model.y_mean)], "prediction")
        return
    y = g.op("Add", [scaled, g.const("y_mean", model.y_mean)])
    g.op("Sub", [g.op("Exp", [y]), g.const("output.one", 1.0)], "prediction")  # expm1, as the dynamo graph has it


def build_network(model: nn.Module, cfg: ModelConfig, opset: int) -> onnx.ModelProto:
    """`model` (a FitlineModel) plus softmax/argmax as ONNX, built from its weights: input
    `features` [batch, n_features] (the encoded matrix), outputs task_outputs(task); no fitline
    metadata yet (stages/serving/onnx.py adds it). Anything else is an ExportError."""
    check_buildable(model, cfg)
    g = Graph()
    with torch.no_grad():
        _outputs(g, model, _network(g, model.net, _network_input(g, model), opset))
    n_out = int(cfg.n_outputs)
    shapes = {"prediction": (TensorProto.FLOAT, [BATCH]), "probabilities": (TensorProto.FLOAT, [BATCH, n_out]),
              "label": (TensorProto.INT64, [BATCH])}
    outputs = [helper.make_tensor_value_info(name, *shapes[name]) for name in task_outputs(cfg.task)]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, int(cfg.n_features)])]
    graph = helper.make_graph(g.nodes, GRAPH_NAME, inputs, outputs, initializer=g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION,
                             producer_name=PRODUCER)
