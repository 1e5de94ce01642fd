"""Export speed: the direct graph builder against the dynamo exporter (export.exporter), side by side.

    .venv/bin/python benchmarks/export_speed.py                 # three models, 5 interleaved repeats
    .venv/bin/python benchmarks/export_speed.py --stage-repeats 5 --repeats 3

Three models as in benchmarks/export_latency.py, seeded and untrained but made to look trained
(scaling and medians fitted on the benchmark rows, non-zero biases: the dynamo exporter's
optimiser drops a zero bias and a multiplication by 1, which a trained model does not have, and
which would flatter its graph): the default MLP 10-64-64 (regression), a raw-row model of 10
numeric and 10 categorical columns (imputation, one-hots, embeddings, the LabelEncoder front),
and a wider 64-256-256-256 classifier. For each:

- export: wall seconds of stages.serving.onnx.export_onnx (network, raw-row front, metadata,
  save, full onnx.checker) per exporter, interleaved within each repeat. The first call is
  reported on its own: in the first model's, dynamo's includes importing torch.onnx and
  onnxscript, which a cold `python -m stages.export` pays once.
- latency: median ms per call of the two fp32 files and their dynamic int8 versions at batch 1
  and 1024, one thread, interleaved (stages.serving.onnx.measure_latency): what the graph costs
  whoever serves it.

And first (`--stage-repeats` > 0) the whole export stage as dvc.yaml runs it, `python -m
stages.export` as a child process in a temporary copy holding a 1,000-row default run (generate
and train run once), per exporter, interleaved: wall seconds and peak RSS (os.wait4).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

import yaml

from stages.core.params import Exporter

# torch, onnx and the models are imported only once the stage runs are done: a child process
# started from a process holding them reported the parent's peak RSS as its own (vfork + exec)
ROOT = Path(__file__).resolve().parents[1]
EXPORTERS: tuple[str, ...] = get_args(Exporter)
CASES = {
    "mlp 10-64-64 regression (default)": ("numeric", 10, (64, 64), "regression"),
    "raw rows 10 num + 10 cat, 64-64": ("mixed", 0, (64, 64), "regression"),
    "mlp 64-256-256-256 classification": ("numeric", 64, (256, 256, 256), "classification"),
}


def make_case(kind: str, features: int, hidden: tuple[int, ...], task: str):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from export_latency import mixed_case, numeric_case  # a sibling script, not a package

    made = numeric_case(features, hidden, task) if kind == "numeric" else mixed_case(hidden, task, "schema")
    return trained_like(*made)


def trained_like(model, cfg, rows):
    """Scaling (and a raw-row model's medians) fitted on the rows, biases drawn: no zero bias or
    unit scale that an exporter could fold away, as in a trained model."""
    import numpy as np
    import torch

    from stages.training.models import fit_scaling

    rng = np.random.default_rng(1)
    y = rng.normal(5.0, 2.0, len(rows.x)) if cfg.task == "regression" else None
    fit_scaling(model, rows.x, y, "standard")
    with torch.no_grad():
        for layer in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
            layer.bias.copy_(torch.from_numpy(rng.uniform(-0.1, 0.1, layer.bias.shape).astype(np.float32)))
    return model.eval(), cfg, rows


def export_times(model, cfg, tmp: Path, repeats: int) -> dict[str, dict[str, float]]:
    """First-call and median-of-the-rest seconds of export_onnx per exporter (interleaved, the
    order rotating per repeat)."""
    from stages.serving.onnx import export_onnx

    times: dict[str, list[float]] = {e: [] for e in EXPORTERS}
    for r in range(repeats + 1):
        order = EXPORTERS[r % len(EXPORTERS):] + EXPORTERS[: r % len(EXPORTERS)] if r else EXPORTERS
        for exporter in order:
            t0 = time.perf_counter()
            export_onnx(model, cfg, tmp / f"{exporter}.onnx", 20, exporter)
            times[exporter].append(time.perf_counter() - t0)
    return {e: {"first_s": v[0], "median_s": statistics.median(v[1:])} for e, v in times.items()}


def graph_latency(model, cfg, rows, tmp: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Median ms per call of each exporter's fp32 file and its dynamic int8 version."""
    from stages.serving.onnx import latency_inputs, measure_latency
    from stages.serving.predict import OnnxModel
    from stages.serving.quantize import quantize_model

    engines = {}
    for exporter in EXPORTERS:
        fp32, int8 = tmp / f"{exporter}.onnx", tmp / f"{exporter}.int8.onnx"
        quantize_model(fp32, int8, "dynamic")
        for kind, path in (("fp32", fp32), ("int8", int8)):
            session = OnnxModel(path, 1)
            engines[f"{exporter}_{kind}"] = lambda r, s=session: s.run(r.feeds)
    return measure_latency(engines, latency_inputs(rows), repeats, warmup=20)


def stage_copy(dest: Path, rows: int) -> Path:
    """A copy of the project with a 1,000-row default run's data and model (generate, train)."""
    shutil.copytree(ROOT / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["n_samples"] = rows
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("generate", "train"):
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=dest, env=child_env(), check=True,
                       capture_output=True)
    return dest


def child_env() -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PYTHONPATH", None)  # `python -m` in the copy imports the copy's code
    return env


def stage_runs(copy: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Median wall seconds and peak RSS (MiB) of `python -m stages.export` per exporter."""
    runs: dict[str, list[tuple[float, float]]] = {e: [] for e in EXPORTERS}
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for r in range(repeats):
        for exporter in EXPORTERS[r % len(EXPORTERS):] + EXPORTERS[: r % len(EXPORTERS)]:
            params["export"]["exporter"] = exporter
            (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "stages.export"], cwd=copy, env=child_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"python -m stages.export (exporter {exporter}) failed in {copy}")
            runs[exporter].append((wall, usage.ru_maxrss / 1024))
    return {e: {"wall_s": statistics.median(w for w, _ in v), "peak_rss_mib": statistics.median(m for _, m in v)}
            for e, v in runs.items()}


def report_case(name: str, times: dict, ms: dict) -> None:
    print(f"\n{name}")
    for e in EXPORTERS:
        print(f"  export {e:<7} first call {times[e]['first_s']:7.3f} s   then {times[e]['median_s']:7.4f} s (median)")
    print(f"  dynamo / direct: first call {times['dynamo']['first_s'] / times['direct']['first_s']:.0f}x, "
          f"then {times['dynamo']['median_s'] / times['direct']['median_s']:.0f}x")
    for b in ms["direct_fp32"]:
        cells = "  ".join(f"{k} {v[b]:.4f}" for k, v in ms.items())
        ratio = {kind: ms[f"dynamo_{kind}"][b] / ms[f"direct_{kind}"][b] for kind in ("fp32", "int8")}
        print(f"  latency {b} ms: {cells}  (dynamo / direct: fp32 {ratio['fp32']:.2f}x, int8 {ratio['int8']:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="exports per exporter and model after the first")
    ap.add_argument("--latency-repeats", type=int, default=200)
    ap.add_argument("--stage-repeats", type=int, default=3, help="cold `python -m stages.export` runs (0: none)")
    ap.add_argument("--rows", type=int, default=1000, help="the stage run's data.n_samples")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        if args.stage_repeats:
            stage = stage_runs(stage_copy(Path(tmp) / "stage", args.rows), args.stage_repeats)
        for i, (name, case) in enumerate(CASES.items()):
            model, cfg, rows = make_case(*case)
            folder = Path(tmp) / str(i)
            folder.mkdir()
            times = export_times(model, cfg, folder, args.repeats)
            report_case(name, times, graph_latency(model, cfg, rows, folder, args.latency_repeats))
    if args.stage_repeats:
        print(f"\nexport stage, {args.rows:,} rows, default params, median of {args.stage_repeats} cold runs:")
        for e, v in stage.items():
            print(f"  {e:<7} wall {v['wall_s']:.2f} s, peak RSS {v['peak_rss_mib']:.0f} MiB")
        print(f"  dynamo / direct wall: {stage['dynamo']['wall_s'] / stage['direct']['wall_s']:.2f}x")

if __name__ == "__main__":
    main()
