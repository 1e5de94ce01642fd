"""Export latency: torch eager vs ONNX Runtime fp32, and int8 (dynamic, static QDQ) vs fp32; for
a table with a schema, the full raw-row graph against the network alone.

One process, one model: it is exported with the stage's own `export_onnx` and quantised with
`quantize_model`, then every engine runs the same batches (1 and 1024 rows) in turn within each
repeat (stages.serving.onnx.measure_latency), so load from other processes hits all engines
alike. Weights are the seeded initialisation (numeric schema: scaling fitted on random rows):
latency and size do not depend on training. Accuracy after int8 is the stage's job (its test
metric budget), not this script's.

    .venv/bin/python benchmarks/export_latency.py                         # stage defaults: mlp 64x64, 10 features
    .venv/bin/python benchmarks/export_latency.py --hidden 256,256,256 --features 64 --threads 2
    .venv/bin/python benchmarks/export_latency.py --schema mixed          # 10 numeric + 10 categorical columns

`--schema mixed`: 10 numeric columns and 10 categorical ones with vocabularies of 5-50 (seeded),
rows with "" and unseen categories. The ONNX engines take the raw columns (one string or float
input per column: what `fitline predict` feeds) and `onnx_network_*` the encoded matrix (the
same network without the LabelEncoder front). `--network schema` (default): whatever build_model
makes of the schema (the training side's raw-row model: imputation, one-hot, embeddings);
`--network plain`: the numeric MLP on the encoded matrix, the cheapest network there is.

Prints median ms per call, rows/s, the ratios (> 1: the second is faster) and the file sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import torch

from stages.core.contracts import Column, ModelConfig
from stages.data.encoding import encode_frame
from stages.serving.onnx import (
    engines_for,
    export_network,
    export_onnx,
    latency_inputs,
    measure_latency,
    model_metadata,
    torch_threads,
)
from stages.serving.predict import METADATA_KEY, OnnxModel
from stages.serving.quantize import calibration_index, quantize_model
from stages.serving.rows import CheckRows, matrix_rows, raw_rows
from stages.training.models import build_model, fit_scaling


def model_config(names: list[str], hidden: tuple[int, ...], task: str, columns: list[Column] | None) -> ModelConfig:
    classes = [0, 1, 2] if task == "classification" else None
    return ModelConfig.from_dict({
        "task": task, "feature_names": names, "target": "y", "classes": classes, "n_features": len(names),
        "n_outputs": len(classes) if classes else 1, "model": "mlp", "hidden": list(hidden), "activation": "relu",
        "dropout": 0.0, "scaling": "standard",
        "columns": None if columns is None else [dataclasses.asdict(c) for c in columns]})


def numeric_case(features: int, hidden: tuple[int, ...], task: str) -> tuple[torch.nn.Module, ModelConfig, CheckRows]:
    cfg = model_config([f"x{i}" for i in range(features)], hidden, task, None)
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4096, features)).astype(np.float32)
    fit_scaling(model, x, x[:, 0], "standard")
    return model.eval(), cfg, matrix_rows(x)


def mixed_schema(n_numeric: int, n_categorical: int, seed: int = 0) -> list[Column]:
    rng = np.random.default_rng(seed)
    numeric = [Column(f"num{i}", "numeric", 0.05) for i in range(n_numeric)]
    categorical = [Column(f"cat{j}", "categorical", 0.05, [f"c{j}_{k}" for k in range(int(rng.integers(5, 51)))])
                   for j in range(n_categorical)]
    return numeric + categorical


def mixed_frame(schema: list[Column], n: int, seed: int = 0) -> pd.DataFrame:
    """Numbers with a few gaps; categories from the vocabulary plus "" and one never seen."""
    rng = np.random.default_rng(seed)
    cols = {}
    for c in schema:
        if c.kind == "numeric":
            cols[c.name] = np.where(rng.random(n) < 0.05, np.nan, rng.normal(2.0, 3.0, n))
        else:
            cols[c.name] = rng.choice(np.array([*(c.vocabulary or []), "", "never seen"], dtype=object), n)
    return pd.DataFrame(cols)


def mixed_case(hidden: tuple[int, ...], task: str, network: str) -> tuple[torch.nn.Module, ModelConfig, CheckRows]:
    schema = mixed_schema(10, 10)
    cfg = model_config([c.name for c in schema], hidden, task, schema)
    # plain: the numeric model on the encoded matrix (indices as numbers), the cheapest network
    built = cfg if network == "schema" else dataclasses.replace(cfg, columns=None)
    model = build_model(built, generator=torch.Generator().manual_seed(0))
    frame = mixed_frame(schema, 4096)
    if getattr(model, "encoder", None) is None:  # today's numeric model on the encoded matrix
        x = encode_frame(frame, schema)
        fit_scaling(model, np.nan_to_num(x), None, "standard")
    return model.eval(), cfg, raw_rows(frame, schema, "benchmark rows")


def write_network(model: torch.nn.Module, cfg: ModelConfig, dest: Path) -> None:
    """The network alone (input `features`: the encoded matrix), servable by OnnxModel."""
    proto = export_network(model, cfg, opset=20)
    numeric = dataclasses.replace(cfg, columns=None)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(model_metadata(numeric), sort_keys=True)})
    onnx.save_model(proto, str(dest))


def run_engines(model, cfg, rows: CheckRows, tmp: Path, threads: int, repeats: int) -> tuple[dict, dict]:
    """Median ms per engine and batch, and the file sizes."""
    paths = {name: tmp / f"{name}.onnx" for name in ("fp32", "dynamic", "static")}
    export_onnx(model, cfg, paths["fp32"], opset=20)
    quantize_model(paths["fp32"], paths["dynamic"], "dynamic")
    idx = calibration_index(len(rows), 1000)
    quantize_model(paths["fp32"], paths["static"], "static", (rows if idx is None else rows.take(idx)).feeds)
    if cfg.columns is not None:
        paths["network_fp32"], paths["network_int8"] = tmp / "network.onnx", tmp / "network.int8.onnx"
        write_network(model, cfg, paths["network_fp32"])
        quantize_model(paths["network_fp32"], paths["network_int8"], "dynamic")
    with torch_threads(threads):
        engines = engines_for(model, paths["fp32"], paths["dynamic"], threads)
        engines["onnx_int8_dynamic"] = engines.pop("onnx_int8")
        static = OnnxModel(paths["static"], threads)
        engines["onnx_int8_static"] = lambda r: static.run(r.feeds)
        if cfg.columns is not None:
            alone = {k: OnnxModel(paths[f"network_{k}"], threads) for k in ("fp32", "int8")}
            engines["onnx_network_fp32"] = lambda r: alone["fp32"].run(r.x)
            engines["onnx_network_int8"] = lambda r: alone["int8"].run(r.x)
        ms = measure_latency(engines, latency_inputs(rows), repeats, warmup=20)
    return ms, {name: p.stat().st_size for name, p in paths.items()}


def report(ms: dict, sizes: dict, mixed: bool) -> None:
    batches = list(next(iter(ms.values())))
    print(f"{'engine':<20}" + "".join(f"{b + ' ms':>16}{b + ' rows/s':>18}" for b in batches))
    for engine, per in ms.items():
        row = "".join(f"{per[b]:>16.4f}{int(b.split('_')[1]) / per[b] * 1e3:>18,.0f}" for b in batches)
        print(f"{engine:<20}{row}")
    for b in batches:
        fp32 = ms["onnx_fp32"][b]
        print(f"{b}: torch/onnx_fp32 {ms['torch_eager'][b] / fp32:.2f}x; "
              f"onnx_fp32/int8 dynamic {fp32 / ms['onnx_int8_dynamic'][b]:.2f}x, static {fp32 / ms['onnx_int8_static'][b]:.2f}x")
        if mixed:
            print(f"{b}: raw-row graph / network alone: fp32 {fp32 / ms['onnx_network_fp32'][b]:.2f}x, "
                  f"int8 dynamic {ms['onnx_int8_dynamic'][b] / ms['onnx_network_int8'][b]:.2f}x")
    print(f"size: fp32 {sizes['fp32']:,} B; int8 dynamic {sizes['dynamic']:,} B ({sizes['dynamic'] / sizes['fp32']:.3f}x), "
          f"static {sizes['static']:,} B ({sizes['static'] / sizes['fp32']:.3f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema", choices=["numeric", "mixed"], default="numeric")
    ap.add_argument("--network", choices=["schema", "plain"], default="schema",
                    help="mixed: build_model of the schema, or the plain numeric MLP on the encoded matrix")
    ap.add_argument("--features", type=int, default=10, help="numeric schema: feature count")
    ap.add_argument("--hidden", default="64,64", help="comma-separated layer widths")
    ap.add_argument("--task", choices=["regression", "classification"], default="regression")
    ap.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads (the stage uses 1)")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    mixed = args.schema == "mixed"
    model, cfg, rows = (mixed_case(hidden, args.task, args.network) if mixed
                        else numeric_case(args.features, hidden, args.task))
    with tempfile.TemporaryDirectory() as tmp:
        ms, sizes = run_engines(model, cfg, rows, Path(tmp), args.threads, args.repeats)
    n_params = sum(p.numel() for p in model.parameters())
    inputs = f"{len(cfg.columns)} raw columns ({args.network} network)" if mixed else f"{args.features} features"
    print(f"model: {args.task} mlp {inputs} -> {'x'.join(map(str, hidden))}, {n_params} parameters; "
          f"threads {args.threads}; median of {args.repeats} interleaved calls; torch {torch.__version__}")
    report(ms, sizes, mixed)


if __name__ == "__main__":
    main()
