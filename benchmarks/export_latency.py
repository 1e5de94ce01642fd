"""Export latency: torch eager vs ONNX Runtime fp32, and int8 (dynamic, static QDQ) vs fp32.

One process, one model: it is exported with the stage's own `export_onnx` and quantised with
`quantize_model` (both int8 modes), then every engine runs the same batches (1 and 1024 rows)
in turn within each repeat (stages.export.measure_latency), so load from other processes hits
all engines alike. Weights are the seeded initialisation with scaling fitted on random rows:
latency and size do not depend on training. Accuracy after int8 is the stage's job (its test
metric budget), not this script's.

    .venv/bin/python benchmarks/export_latency.py                         # stage defaults: mlp 64x64, 10 features
    .venv/bin/python benchmarks/export_latency.py --hidden 256,256,256 --features 64 --threads 2

Prints median ms per call, rows/s, the ratios torch/ONNX fp32 and fp32/int8 (> 1: the second
is faster) and the file sizes.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from stages.core.contracts import ModelConfig
from stages.serving.onnx import engines_for, export_onnx, latency_inputs, measure_latency, torch_threads
from stages.serving.predict import OnnxModel
from stages.serving.quantize import calibration_rows, quantize_model
from stages.training.models import build_model, fit_scaling


def make_model(features: int, hidden: tuple[int, ...], task: str) -> tuple[torch.nn.Module, ModelConfig, np.ndarray]:
    classes = [0, 1, 2] if task == "classification" else None
    cfg = ModelConfig.from_dict({"task": task, "feature_names": [f"x{i}" for i in range(features)], "target": "y", "classes": classes,
           "n_features": features, "n_outputs": len(classes) if classes else 1, "model": "mlp",
           "hidden": list(hidden), "activation": "relu", "dropout": 0.0, "scaling": "standard"})
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4096, features)).astype(np.float32)
    fit_scaling(model, x, x[:, 0], "standard")
    return model.eval(), cfg, x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--hidden", default="64,64", help="comma-separated layer widths")
    ap.add_argument("--task", choices=["regression", "classification"], default="regression")
    ap.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads (the stage uses 1)")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    model, cfg, x = make_model(args.features, hidden, args.task)

    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / f"{name}.onnx" for name in ("fp32", "dynamic", "static")}
        export_onnx(model, cfg, paths["fp32"], opset=20)
        quantize_model(paths["fp32"], paths["dynamic"], "dynamic")
        quantize_model(paths["fp32"], paths["static"], "static", calibration_rows(x, 1000))
        with torch_threads(args.threads):
            engines = engines_for(model, paths["fp32"], paths["dynamic"], args.threads)
            engines["onnx_int8_dynamic"] = engines.pop("onnx_int8")
            engines["onnx_int8_static"] = OnnxModel(paths["static"], args.threads).run
            ms = measure_latency(engines, latency_inputs(x), args.repeats, warmup=20)
        sizes = {name: p.stat().st_size for name, p in paths.items()}

    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.task} mlp {args.features}->{'x'.join(map(str, hidden))}, {n_params} parameters; "
          f"threads {args.threads}; median of {args.repeats} interleaved calls; torch {torch.__version__}")
    batches = list(latency_inputs(x))
    print(f"{'engine':<20}" + "".join(f"{b + ' ms':>16}{b + ' rows/s':>18}" for b in batches))
    for engine, per in ms.items():
        row = "".join(f"{per[b]:>16.4f}{int(b.split('_')[1]) / per[b] * 1e3:>18,.0f}" for b in batches)
        print(f"{engine:<20}{row}")
    for b in batches:
        fp32 = ms["onnx_fp32"][b]
        print(f"{b}: torch/onnx_fp32 {ms['torch_eager'][b] / fp32:.2f}x; "
              f"onnx_fp32/int8 dynamic {fp32 / ms['onnx_int8_dynamic'][b]:.2f}x, static {fp32 / ms['onnx_int8_static'][b]:.2f}x")
    print(f"size: fp32 {sizes['fp32']:,} B; int8 dynamic {sizes['dynamic']:,} B ({sizes['dynamic'] / sizes['fp32']:.3f}x), "
          f"static {sizes['static']:,} B ({sizes['static'] / sizes['fp32']:.3f}x)")


if __name__ == "__main__":
    main()
