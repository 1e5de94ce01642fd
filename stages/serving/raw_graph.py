"""The raw-row front of the exported graph: one input per feature column, mapped to the encoded
matrix the network takes (stages.data.encoding is the contract both sides follow).

    <column> [batch, 1] float   numeric (NaN: missing) and datetime (days since 1970-01-01 UTC)
    <column> [batch, 1] string  boolean and categorical: `encoding.category_keys` of the values
        -> LabelEncoder (ai.onnx.ml): "" -> MISSING, vocabulary[i] -> 2 + i, anything else UNKNOWN
    Concat in schema order -> [batch, n_columns] float -> the network (imputation, one-hot,
    embeddings, scaling: all inside the torch model) -> prediction | probabilities, label

No torch here: this works on the network's ONNX proto alone.
"""

from __future__ import annotations

from typing import Any

import onnx
import onnx.compose
from onnx import TensorProto, helper

from stages.core.contracts import Column
from stages.core.errors import ExportError
from stages.data.encoding import MISSING, MISSING_KEY, UNKNOWN
from stages.serving.predict import CATEGORY_KINDS, INPUT_NAME, graph_output_names

ML_DOMAIN = "ai.onnx.ml"
# LabelEncoder string -> float with a default exists since ai.onnx.ml 2; 3 is the oldest set
# that ONNX Runtime and the other runtimes share with opsets 18-23
ML_OPSET = 3
FIRST_CATEGORY = 2  # encoding.category_index: the vocabulary's first index
BATCH = "batch"  # the dynamo exporter's name for the batch dimension

# what the graph's inputs mean, stored in the model's metadata for whoever feeds it by hand
ENCODING = {
    "numeric": "float [batch, 1], NaN where missing",
    "datetime": "float [batch, 1]: days since 1970-01-01T00:00:00Z, NaN where missing",
    "categorical": f"string [batch, 1]: {MISSING_KEY!r} (missing) -> {MISSING}, vocabulary[i] -> "
                   f"{FIRST_CATEGORY} + i, any other string (unseen in train) -> {UNKNOWN}",
    "boolean": "as categorical, keys 'True' / 'False'",
    "keys": "stages.data.encoding.category_keys: str(value); 3.0 -> '3'; True -> 'True'; NaN/None -> ''",
}


def internal_prefix(names: list[str]) -> str:
    """A prefix for the graph's own value names that no column name starts with: the columns are
    graph inputs under their own names, and ONNX names share one namespace."""
    prefix = "fitline/"
    while any(n.startswith(prefix) for n in names):
        prefix = "_" + prefix
    return prefix


def category_table(column: Column) -> tuple[list[str], list[float]]:
    """LabelEncoder keys and values for one category column (encoding.category_index's mapping)."""
    vocabulary = list(column.vocabulary or [])
    bad = [v for v in vocabulary if not isinstance(v, str) or v == MISSING_KEY]
    if bad or len(set(vocabulary)) != len(vocabulary):
        what = f"holds {bad[0]!r}" if bad else "has duplicates"
        raise ExportError(f"column {column.name!r}: its vocabulary {what}; it must be distinct non-empty "
                          "strings (re-run the generate stage)")
    keys = [MISSING_KEY, *vocabulary]
    values = [float(MISSING), *(float(FIRST_CATEGORY + i) for i in range(len(vocabulary)))]
    return keys, values


def input_graph(columns: list[Column], prefix: str, opset: int, ir_version: int) -> onnx.ModelProto:
    """Column inputs -> [batch, n_columns] float, output `<prefix>encoded`."""
    inputs, nodes, parts = [], [], []
    for i, c in enumerate(columns):
        if not c.name:
            raise ExportError("a feature column without a name cannot be a graph input (rename it)")
        if c.kind in CATEGORY_KINDS:
            keys, values = category_table(c)
            out = f"{prefix}index/{i}"
            inputs.append(helper.make_tensor_value_info(c.name, TensorProto.STRING, [BATCH, 1]))
            nodes.append(helper.make_node("LabelEncoder", [c.name], [out], name=out, domain=ML_DOMAIN,
                                          keys_strings=keys, values_floats=values, default_float=float(UNKNOWN)))
            parts.append(out)
        else:
            inputs.append(helper.make_tensor_value_info(c.name, TensorProto.FLOAT, [BATCH, 1]))
            parts.append(c.name)
    encoded = f"{prefix}encoded"
    nodes.append(helper.make_node("Concat", parts, [encoded], name=encoded, axis=1))
    output = helper.make_tensor_value_info(encoded, TensorProto.FLOAT, [BATCH, len(columns)])
    graph = helper.make_graph(nodes, "fitline_raw_inputs", inputs, [output])
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def dedupe_opsets(model: onnx.ModelProto) -> None:
    """merge_models lists the default domain twice; ORT's quantiser then fails with 'Failed to
    find proper ai.onnx domain'. Keep the first entry of each domain (merge checked they agree)."""
    seen: dict[str, Any] = {}
    for o in model.opset_import:
        seen.setdefault(o.domain or "ai.onnx", o)
    del model.opset_import[:]
    model.opset_import.extend(seen.values())


def rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename one value wherever it appears (producers, consumers, graph outputs, value_info)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


def with_raw_inputs(network: onnx.ModelProto, columns: list[Column], task: str) -> onnx.ModelProto:
    """One graph: the column inputs, their encoding, and `network` (which takes `features`,
    the encoded matrix); outputs renamed to graph_output_names (never a column's name)."""
    names = [c.name for c in columns]
    prefix = internal_prefix(names)
    front = input_graph(columns, prefix, default_opset(network), network.ir_version)
    # every name of the network (values, initializers, nodes) moves under the prefix, so none
    # can collide with a column's name
    back = onnx.compose.add_prefix(network, f"{prefix}net/")
    merged = onnx.compose.merge_models(
        front, back, io_map=[(f"{prefix}encoded", f"{prefix}net/{INPUT_NAME}")], name=network.graph.name,
        producer_name=network.producer_name, producer_version=network.producer_version,
    )
    dedupe_opsets(merged)
    for role, name in graph_output_names(task, names).items():
        rename_value(merged.graph, f"{prefix}net/{role}", name)
    return merged
