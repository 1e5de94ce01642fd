"""The network as ONNX through torch.onnx's dynamo exporter (export.exporter `dynamo`).

It traces any module (stages/serving/onnx_graph.py builds fitline's own models directly, in
milliseconds where this takes seconds), so it stays for comparison and for a module the direct
builder does not know. Importing this module imports nothing new; the first export imports
torch.onnx and onnxscript (about a second), which is why stages/serving/onnx.py imports this
module only when the dynamo exporter is chosen.
"""

from __future__ import annotations

import warnings

import onnx
import torch
from torch import nn

from stages.core.contracts import ModelConfig
from stages.core.errors import ExportError, first_line
from stages.serving.predict import INPUT_NAME, task_outputs


class ServingModel(nn.Module):
    """The trained model plus what serving needs on top of it: softmax and argmax."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, features: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.model(features)
        if self.task == "regression":
            return out
        proba = torch.softmax(out, dim=-1)
        return proba, torch.argmax(proba, dim=-1)


def strip_debug_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node and per-value debug metadata (Python stack traces with the
    checkout's and the venv's absolute paths, FX node names): with it, the same model exported
    from two folders gave different bytes, so dvc.lock differed per checkout."""
    graph = proto.graph
    for item in [*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer]:
        del item.metadata_props[:]
    del graph.metadata_props[:]
    del proto.metadata_props[:]


def dynamo_network(model: nn.Module, cfg: ModelConfig, opset: int) -> onnx.ModelProto:
    """`model` (eval mode, CPU) plus softmax/argmax as ONNX: input `features` [batch,
    n_features] (the encoded matrix), outputs task_outputs(task); no fitline metadata yet."""
    task = cfg.task
    serving = ServingModel(model, task).eval()
    # batch 2, not 1: torch.export specialises sizes 0 and 1 instead of keeping them symbolic
    example = torch.zeros((2, int(cfg.n_features)), dtype=torch.float32)
    outputs = task_outputs(task)
    try:
        with warnings.catch_warnings():
            # torch.export's deprecation notice about its own pytree internals, not about this call
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            program = torch.onnx.export(
                serving, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(outputs), verbose=False,
            )
    except Exception as exc:  # the exporter wraps failures in several types; one line is enough
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {first_line(exc)}") from None
    proto = program.model_proto
    strip_debug_metadata(proto)
    return proto
