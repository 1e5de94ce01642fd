"""The trained model as ONNX (fp32, parity-checked) and int8, with metrics.

1. The torch model, plus what the graph serves users (regression `prediction`; classification
   `probabilities` via softmax and `label` via argmax), becomes ONE ONNX file with a dynamic
   batch dimension, by export.exporter: `direct` builds the graph from the weights
   (stages/serving/onnx_graph.py; fitline's models only), `dynamo` traces it with torch.onnx
   (stages/serving/onnx_dynamo.py; any module, seconds). It is checked by onnx.checker (full
   check). Feature names, target, task and class labels go into its metadata.
   A model with a column schema (ModelConfig.columns) takes raw rows: the network, which takes
   encode_frame's matrix, gets stages/serving/raw_graph.py's front (one input per column,
   categories mapped by LabelEncoder), and the schema goes into the metadata. Without one the
   graph is the numeric one (input `features`). Either exporter gives the same inputs, outputs
   and metadata, and the same bytes for the same weights wherever it runs.
2. Parity: ONNX Runtime fp32 against torch on the whole test split (regression predictions,
   classification probabilities); any output off by more than `parity_atol + parity_rtol *
   |torch output|` fails (float32 rounding grows with the output: a price of 1e5 is off by a
   few 1e-3 from summation order alone). A raw-row graph is checked on the test split's raw
   rows plus rows with missing values, empty strings and unseen categories
   (stages/serving/rows.py): ONNX Runtime on onnx_inputs(rows), torch on encode_frame(rows).
3. Int8 (see stages/serving/quantize.py: the network's MatMul/Gemm only); its main test metric
   (regression R², classification accuracy) against the fp32 model's; a drop over
   `export.max_metric_drop` fails.
4. Latency (median ms per call, batch 1 and 1024) for torch eager, ONNX fp32 and int8 (the
   ONNX engines on raw rows for a raw-row graph: what a caller pays).

With export.prune.amount > 0 the MLP's hidden layers are first pruned and fine-tuned
(stages/training/pruning.py, on the train and val splits with train's optimizer); the pruned
model's torch test metric may fall at most export.max_metric_drop below the unpruned model's
(else an ExportError naming export.prune.amount, before anything is written). The pruned model
is then what goes through 1-4 and is served; the unpruned one is exported and quantised to a
temporary folder only to compare sizes and latency (metrics `pruning`, one interleaved run).

Both models are written to temporary files beside their destination and renamed only when
every check passed: a failed export never replaces a good artifact.
"""


from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from torch import nn

from stages.core.contracts import INT8_NAME, MODELS_DIR, ONNX_NAME, ModelConfig
from stages.core.errors import DataError, ExportError, first_line
from stages.core.io import atomic_path
from stages.core.params import Exporter, ExportParams, TrainParams, allowed
from stages.data.encoding import onnx_inputs
from stages.data.splits import Split
from stages.evaluation.metrics import regression_metrics
from stages.serving.onnx_graph import build_network
from stages.serving.predict import METADATA_KEY, OnnxModel, graph_output_names
from stages.serving.quantize import calibration_index, calibration_rows, quantize_model
from stages.serving.raw_graph import ENCODING, with_raw_inputs
from stages.serving.rows import EDGE_ROWS, CheckRows, matrix_rows, raw_rows, tiled
from stages.training.models import forward_chunks

log = logging.getLogger(__name__)


LATENCY_BATCHES = {"batch_1": 1, "batch_1024": 1024}


# Latency is measured on one thread for every engine. With several, torch's OpenMP workers
# wait on each other whenever the host is busy: the figures would measure the neighbours, not
# the model (README, export).
LATENCY_THREADS = 1




def model_metadata(cfg: ModelConfig) -> dict[str, Any]:
    """What predict needs to serve the model, stored in the ONNX file (stages/serving/predict.py
    describes the keys); a numeric model's keeps the keys it always had."""
    info: dict[str, Any] = {
        "task": cfg.task,
        "feature_names": list(cfg.feature_names),
        "target": cfg.target,
        "classes": list(cfg.classes) if cfg.classes is not None else None,
        "model": cfg.model,
    }
    if cfg.columns is not None:
        info["columns"] = [{"name": c.name, "kind": c.kind, "vocabulary": c.vocabulary} for c in cfg.columns]
        info["encoding"] = ENCODING
        info["outputs"] = graph_output_names(cfg.task, [c.name for c in cfg.columns])
    return info


def _dynamo_network(model: nn.Module, cfg: ModelConfig, opset: int) -> onnx.ModelProto:
    from stages.serving.onnx_dynamo import dynamo_network  # only here: the first export imports torch.onnx

    return dynamo_network(model, cfg, opset)


# export.exporter -> (model, cfg, opset) -> the network's ONNX graph (input `features`, the encoded
# matrix; outputs task_outputs(task); no fitline metadata yet)
EXPORTERS: dict[Exporter, Callable[[nn.Module, ModelConfig, int], onnx.ModelProto]] = {
    "direct": build_network,  # stages/serving/onnx_graph.py: from the weights, fitline's models only
    "dynamo": _dynamo_network,  # torch.onnx's dynamo exporter: any module, seconds
}


def export_network(model: nn.Module, cfg: ModelConfig, opset: int, exporter: str = "direct") -> onnx.ModelProto:
    """`model` (eval mode, CPU) plus softmax/argmax as ONNX, by `exporter` (export.exporter)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"export.exporter: unknown exporter {exporter!r} (allowed: {allowed(Exporter)})")
    return EXPORTERS[exporter](model, cfg, opset)  # type: ignore[index]


def export_onnx(model: nn.Module, cfg: ModelConfig, dest: Path, opset: int, exporter: str = "direct") -> None:
    """Write `model` to `dest` as a single-file ONNX model (raw-row inputs when cfg has a column
    schema) with its fitline metadata, and check it; `exporter`: export.exporter."""
    proto = export_network(model, cfg, opset, exporter)
    if cfg.columns is not None:
        try:
            proto = with_raw_inputs(proto, cfg.columns, cfg.task)
        except (ValueError, onnx.checker.ValidationError) as exc:  # onnx.compose's refusals
            raise ExportError(f"adding the raw-row inputs failed: {first_line(exc)}") from None
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(model_metadata(cfg), sort_keys=True)})
    onnx.save_model(proto, str(dest))
    try:
        onnx.checker.check_model(str(dest), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails onnx.checker: {first_line(exc)}") from None


def torch_primary(model: nn.Module, task: str, x: np.ndarray) -> np.ndarray:
    """Torch's counterpart of the graph's main output: predictions, or class probabilities."""
    parts = [(out if task == "regression" else torch.softmax(out, dim=-1)).numpy() for _, out in forward_chunks(model, x)]
    return np.concatenate(parts)


def primary(task: str, outputs: dict[str, np.ndarray]) -> np.ndarray:
    return outputs["prediction"] if task == "regression" else outputs["probabilities"]


def metric_name(task: str) -> str:
    # R², not RMSE: it is scale-free, so one max_metric_drop means the same for any target
    return "r2" if task == "regression" else "accuracy"


def test_metric(task: str, y: np.ndarray, main_output: np.ndarray) -> float:
    """Regression R² (stages.evaluation.metrics, as in metrics/eval.json); accuracy of argmax(probabilities)."""
    if task == "regression":
        return regression_metrics(y, main_output)["r2"]
    return float((main_output.argmax(axis=1) == y).mean())


def check_parity(got: np.ndarray, want: np.ndarray, atol: float, rtol: float,
                 rows: str = "the test split") -> tuple[float, float]:
    """ONNX outputs `got` against torch's `want`, element by element: |got - want| <= atol + rtol
    * |want|. Return (max abs difference, max of difference / allowed: 1.0 = at the tolerance);
    over the tolerance (or NaN) is an ExportError naming the worst output and the `rows`."""
    if not len(want):
        return 0.0, 0.0
    diff = np.abs(got.astype(np.float64) - want)
    scaled = diff / (atol + rtol * np.abs(want))
    worst = int(np.nanargmax(scaled)) if not np.isnan(scaled).all() else 0
    max_abs, max_scaled = float(diff.max()), float(scaled.max())
    if not max_scaled <= 1.0:  # also catches NaN
        raise ExportError(
            f"ONNX fp32 output differs from torch on {rows} by {diff.flat[worst]:.3g} where torch gives "
            f"{want.flat[worst]:.6g}, over export.parity_atol {atol:.3g} + export.parity_rtol {rtol:.3g} x |output| "
            f"(max abs difference {max_abs:.3g})"
        )
    return max_abs, max_scaled


def check_metric_drop(name: str, fp32: float, int8: float, budget: float) -> float:
    """fp32 - int8 (both higher-is-better); over `budget` is an ExportError giving both."""
    drop = fp32 - int8
    if not drop <= budget + 1e-12:  # a drop of exactly the budget passes despite float rounding
        raise ExportError(
            f"int8 test {name} {int8:.4f} vs fp32 {fp32:.4f}: drop {drop:.4f} over export.max_metric_drop {budget:g}"
        )
    return drop


def measure_latency(
    engines: dict[str, Callable[[np.ndarray], object]], inputs: dict[str, np.ndarray], repeats: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Median wall ms per call of each engine on each input; engines are interleaved within a
    repeat so that load from other processes hits all of them alike, and their order rotates
    from repeat to repeat so that none always runs right after the same neighbour (at batch 1
    an ONNX call right after torch eager took about twice as long: cold caches)."""
    times: dict[str, dict[str, list[float]]] = {e: {b: [] for b in inputs} for e in engines}
    order = list(engines.items())
    for b, x in inputs.items():
        for _ in range(warmup):
            for fn in engines.values():
                fn(x)
        for r in range(repeats):
            for e, fn in order[r % len(order):] + order[: r % len(order)]:
                t0 = time.perf_counter()
                fn(x)
                times[e][b].append((time.perf_counter() - t0) * 1e3)
    return {e: {b: float(np.median(v)) for b, v in per.items()} for e, per in times.items()}


def check_torch_finite(want: np.ndarray, rows: CheckRows) -> None:
    """Torch's own output is a number on every raw row: NaN there (before any comparison) means
    the model does not handle what users send, which no parity tolerance should hide."""
    bad = np.isnan(want.reshape(len(want), -1)).any(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        which = f"test row {first}" if first < rows.n_test else f"the added row with {EDGE_ROWS[first - rows.n_test]}"
        raise ExportError(
            f"the torch model outputs NaN on {int(bad.sum())} of {len(rows)} raw rows (first: {which}): it does "
            "not handle missing values, empty strings or unseen categories (re-run the train stage)"
        )


def latency_inputs(rows: CheckRows) -> dict[str, CheckRows]:
    """Batch 1 and batch 1024 from the test rows (repeated when the split has fewer rows)."""
    return {name: tiled(rows, n) for name, n in LATENCY_BATCHES.items()}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def engines_for(model: nn.Module, fp32: Path, int8: Path, threads: int) -> dict[str, Callable[[CheckRows], object]]:
    """Torch eager (on the encoded matrix), ONNX fp32 and ONNX int8 (on the graph's feeds) as
    callables on a batch of CheckRows."""
    fp32_session, int8_session = OnnxModel(fp32, threads), OnnxModel(int8, threads)

    def torch_eager(rows: CheckRows) -> object:
        with torch.no_grad():
            return model(torch.from_numpy(rows.x))

    return {"torch_eager": torch_eager, "onnx_fp32": lambda rows: fp32_session.run(rows.feeds),
            "onnx_int8": lambda rows: int8_session.run(rows.feeds)}


def latency(model: nn.Module, fp32: Path, int8: Path, rows: CheckRows, repeats: int,
            others: dict[str, Path] | None = None) -> dict[str, dict[str, float]]:
    """Median ms per call at batch 1 and 1024 for each engine, single-threaded; `others`: more
    ONNX files (by engine name) timed in the same interleaved run."""
    with torch_threads(LATENCY_THREADS):
        engines = engines_for(model, fp32, int8, LATENCY_THREADS)
        for name, path in (others or {}).items():
            session = OnnxModel(path, LATENCY_THREADS)
            engines[name] = lambda rows, s=session: s.run(rows.feeds)
        return measure_latency(engines, latency_inputs(rows), repeats)


def check_rows(cfg: ModelConfig, test: Split, frame: pd.DataFrame | None) -> CheckRows:
    """What parity, the int8 metric and latency run on: the test matrix (numeric graph), or the
    test split's raw rows plus the edge rows (raw-row graph)."""
    if cfg.columns is None:
        return matrix_rows(test.x)
    if frame is None:
        raise DataError("test split: a raw-row model is checked on the split's raw rows; none were given")
    if len(frame) != len(test.y):
        raise DataError(f"test split: {len(frame)} raw rows but {len(test.y)} targets (re-run the generate stage)")
    return raw_rows(frame, cfg.columns, "test split")


def calibration_input(params: ExportParams, cfg: ModelConfig, splits: dict[str, Split],
                      frames: dict[str, pd.DataFrame] | None) -> np.ndarray | dict[str, np.ndarray] | None:
    """Static quantisation's calibration rows from train, as the graph takes them (else None)."""
    if params.quantization != "static":
        return None
    if cfg.columns is None:
        return calibration_rows(splits["train"].x, params.calibration_rows)
    if frames is None or "train" not in frames:
        raise DataError("train split: static quantization of a raw-row model needs the split's raw rows")
    train = frames["train"]
    idx = calibration_index(len(train), params.calibration_rows)
    return onnx_inputs(train if idx is None else train.iloc[idx], cfg.columns, "train split")


@dataclass
class Pruned:
    """The pruned, fine-tuned model that replaces the trained one for export, and its figures."""

    model: nn.Module
    cfg: ModelConfig
    metric_before: float  # torch test metric of the unpruned model
    metric_after: float  # ... of the pruned, fine-tuned one
    fine_tune: dict[str, Any]


def check_prune_drop(name: str, before: float, after: float, budget: float, amount: float,
                     hidden: tuple[list[int], list[int]]) -> float:
    """unpruned - pruned test metric (both higher-is-better); over `budget` is a one-line
    ExportError naming export.prune.amount."""
    drop = before - after
    if not drop <= budget + 1e-12:
        raise ExportError(
            f"pruned model (hidden {hidden[0]} -> {hidden[1]}) test {name} {after:.4f} vs unpruned {before:.4f}: drop "
            f"{drop:.4f} over export.max_metric_drop {budget:g}; lower export.prune.amount (now {amount:g})"
        )
    return drop


def prune_for_export(params: ExportParams, model: nn.Module, cfg: ModelConfig, splits: dict[str, Split],
                     rows: CheckRows, train_params: TrainParams | None) -> Pruned:
    """Prune `model` by export.prune, fine-tune it on train (early stopping on val), and hold
    its torch test metric to export.max_metric_drop against the unpruned model's."""
    prune = params.prune
    missing = [n for n in ("train", "val") if n not in splits]
    if missing:
        raise DataError(f"export.prune.amount {prune.amount:g}: fine-tuning the pruned model needs the "
                        f"{' and '.join(missing)} split(s)")
    if train_params is None:
        raise ValueError("export_model: pruning fine-tunes with the train params; pass train_params")
    task, test = cfg.task, splits["test"]
    before = test_metric(task, test.y, torch_primary(model, task, rows.x)[: rows.n_test])
    t0 = time.perf_counter()
    # only here: the pruning module brings the training loop's imports, which an export without
    # pruning (the default) does not need
    from stages.training.pruning import fine_tune, prune_model

    small, small_cfg = prune_model(model, cfg, prune.amount, prune.criterion)
    small, tuned = fine_tune(small, small_cfg, train_params, splits, prune.fine_tune_epochs)
    after = test_metric(task, test.y, torch_primary(small, task, rows.x)[: rows.n_test])
    check_prune_drop(metric_name(task), before, after, params.max_metric_drop, prune.amount,
                     (list(cfg.hidden), list(small_cfg.hidden)))
    log.info("pruned hidden %s -> %s and fine-tuned (%.1f s): test %s %.4f -> %.4f", list(cfg.hidden),
             small_cfg.hidden, time.perf_counter() - t0, metric_name(task), before, after)
    return Pruned(small, small_cfg, before, after, tuned)


def pruning_metrics(params: ExportParams, model: nn.Module, cfg: ModelConfig, pruned: Pruned,
                    sizes: dict[str, int], latency_ms: dict[str, dict[str, float]]) -> dict[str, Any]:
    """metrics/export.json's `pruning`: what pruning removed, cost and bought (unpruned vs pruned)."""
    from stages.training.pruning import count_parameters

    p_before, p_after = count_parameters(model), count_parameters(pruned.model)
    speedup = {kind: {b: latency_ms[kind][b] / latency_ms[f"pruned_{kind}"][b] for b in LATENCY_BATCHES}
               for kind in ("fp32", "int8")}
    return {
        "amount": params.prune.amount,
        "criterion": params.prune.criterion,
        "fine_tune_epochs": params.prune.fine_tune_epochs,
        "fine_tune_epochs_run": pruned.fine_tune["epochs_run"],
        "fine_tune_best_epoch": pruned.fine_tune["best_epoch"],
        "hidden_before": list(cfg.hidden),
        "hidden_after": list(pruned.cfg.hidden),
        "params_before": p_before,
        "params_after": p_after,
        "params_ratio": p_after / p_before,
        "metric_name": metric_name(cfg.task),
        "test_metric_before": pruned.metric_before,
        "test_metric_after": pruned.metric_after,
        "metric_drop": pruned.metric_before - pruned.metric_after,
        "size_bytes": sizes,
        "latency_ms": latency_ms,
        "speedup": speedup,  # unpruned ms / pruned ms
    }


def export_model(
    params: ExportParams, model: nn.Module, cfg: ModelConfig, splits: dict[str, Split], out_dir: Path = MODELS_DIR,
    frames: dict[str, pd.DataFrame] | None = None, train_params: TrainParams | None = None,
) -> dict[str, Any]:
    """Export, check and quantise `model` (pruned and fine-tuned first with export.prune.amount
    > 0: then splits needs train and val, and `train_params` the run's train params); write
    out_dir/model.onnx and model.int8.onnx only when every check passed; return the metrics for
    metrics/export.json. `frames`: the splits' raw rows (read_split_frame), needed for a raw-row
    model: test, and train for static int8."""
    task, test = cfg.task, splits["test"]
    if len(test.y) == 0:
        raise DataError("test split: no rows to check the exported model on")
    rows = check_rows(cfg, test, (frames or {}).get("test"))
    where = "the test split" if cfg.columns is None else f"the test split's raw rows (+{len(rows) - rows.n_test} edge rows)"
    model = model.to("cpu").eval()
    pruned = prune_for_export(params, model, cfg, splits, rows, train_params) if params.prune.amount > 0 else None
    unpruned, unpruned_cfg = model, cfg
    if pruned is not None:  # from here on the pruned model is the one exported, checked and served
        model, cfg = pruned.model, pruned.cfg
    fp32_dest, int8_dest = Path(out_dir) / ONNX_NAME, Path(out_dir) / INT8_NAME
    reference = tempfile.TemporaryDirectory(prefix="fitline-unpruned-") if pruned else contextlib.nullcontext()
    with atomic_path(fp32_dest) as fp32_tmp, atomic_path(int8_dest) as int8_tmp, reference as ref_dir:
        t0 = time.perf_counter()
        export_onnx(model, cfg, fp32_tmp, params.opset, params.exporter)
        log.info("exported %s (%.1f s)", fp32_dest, time.perf_counter() - t0)
        ref = torch_primary(model, task, rows.x)
        if cfg.columns is not None:
            check_torch_finite(ref, rows)
        onnx_fp32 = primary(task, OnnxModel(fp32_tmp).run(rows.feeds))
        parity, parity_scaled = check_parity(onnx_fp32, ref, params.parity_atol, params.parity_rtol, where)

        quantize_model(fp32_tmp, int8_tmp, params.quantization, calibration_input(params, cfg, splits, frames))
        onnx_int8 = primary(task, OnnxModel(int8_tmp).run(rows.feeds))
        name, n = metric_name(task), rows.n_test
        scores = {engine: test_metric(task, test.y, out[:n])
                  for engine, out in (("torch", ref), ("onnx_fp32", onnx_fp32), ("onnx_int8", onnx_int8))}
        drop = check_metric_drop(name, scores["onnx_fp32"], scores["onnx_int8"], params.max_metric_drop)
        log.info("parity max abs %.3g; test %s: %s; int8 drop %.4f", parity, name,
                 ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), drop)

        others: dict[str, Path] = {}
        if pruned is not None:  # the unpruned model, exported and quantised alike, for comparison only
            others = {"unpruned_fp32": Path(ref_dir) / ONNX_NAME, "unpruned_int8": Path(ref_dir) / INT8_NAME}
            export_onnx(unpruned, unpruned_cfg, others["unpruned_fp32"], params.opset, params.exporter)
            quantize_model(others["unpruned_fp32"], others["unpruned_int8"], params.quantization,
                           calibration_input(params, unpruned_cfg, splits, frames))
        latency_ms = latency(model, fp32_tmp, int8_tmp, rows, params.latency_repeats, others)
        size_fp32, size_int8 = fp32_tmp.stat().st_size, int8_tmp.stat().st_size
        if pruned is not None:
            sizes = {"fp32": others["unpruned_fp32"].stat().st_size, "pruned_fp32": size_fp32,
                     "int8": others["unpruned_int8"].stat().st_size, "pruned_int8": size_int8}
            compared = {"fp32": latency_ms.pop("unpruned_fp32"), "pruned_fp32": latency_ms["onnx_fp32"],
                        "int8": latency_ms.pop("unpruned_int8"), "pruned_int8": latency_ms["onnx_int8"]}
            pruning = pruning_metrics(params, unpruned, unpruned_cfg, pruned, sizes, compared)
    metrics = {
        "quantization": params.quantization,
        "int8_is_fp32_copy": params.quantization == "none",
        "opset": params.opset,
        "task": task,
        "metric_name": name,
        "test_metric": scores,
        "metric_drop": drop,
        "parity_max_abs": parity,
        "parity_max_scaled": parity_scaled,  # worst difference / its tolerance; <= 1 passed
        "parity_output": "prediction" if task == "regression" else "probabilities",
        "test_rows": len(test.y),
        "size_fp32_bytes": size_fp32,
        "size_int8_bytes": size_int8,
        "size_ratio": size_int8 / size_fp32,
        "latency_ms": latency_ms,
        "latency_repeats": params.latency_repeats,
        "latency_threads": LATENCY_THREADS,
    }
    if cfg.columns is not None:  # only then: the numeric run's metrics file keeps its keys
        metrics.update(inputs="raw columns", parity_rows=len(rows), parity_edge_rows=len(rows) - rows.n_test)
    if pruned is not None:  # only then: without pruning the metrics file keeps its keys
        metrics["pruning"] = pruning
    return metrics
