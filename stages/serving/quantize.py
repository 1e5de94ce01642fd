"""Int8 quantisation of an exported fp32 ONNX model with ONNX Runtime's quantisation tools.

- `dynamic`: int8 weights, activations quantised on the fly per batch (quantize_dynamic).
- `static`: QDQ format, activation ranges calibrated (MinMax) on training rows. Only the
  Gemm/MatMul nodes are quantised: quantising the softmax output or the regression output
  would round probabilities / predictions to 256 levels for no speed gain.

Either way only the network's MatMul/Gemm change: a raw-row graph's front (LabelEncoder,
Concat; stages/serving/raw_graph.py) has neither, so it stays as exported.
- `none`: the fp32 model copied unchanged, so the int8 path (a DVC output) always exists.

No torch here: this runs on the ONNX file alone.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np
import onnx

from stages.core.errors import ExportError, first_line
from stages.core.params import Quantization, allowed
from stages.serving.predict import INPUT_NAME

log = logging.getLogger(__name__)

QUANTISED_OPS = ["Gemm", "MatMul"]
CALIBRATION_BATCH = 256


class _QuantiserChatter(logging.Filter):
    """ORT's quantiser logs on the root logger: an INFO line per unquantised tensor, and a
    'consider to run pre-processing' warning although clearing value_info (see `_prepared`)
    is the pre-processing this graph needs. Both are dropped; real warnings stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root":
            return True
        return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_hint() -> Iterator[None]:
    root = logging.getLogger()
    flt = _QuantiserChatter()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _prepared(src: Path) -> onnx.ModelProto:
    """The fp32 model without its value_info.

    The dynamo exporter records intermediate shapes that ORT's quantiser re-infers and then
    rejects ("Inferred shape and existing shape differ"); dropping them lets it infer afresh
    (the directly built graph has none).
    quant_pre_process fixes the same thing but costs seconds per model.
    """
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    return model


def calibration_reader(feeds: dict[str, np.ndarray]):  # -> CalibrationDataReader
    from onnxruntime.quantization import CalibrationDataReader

    n = len(next(iter(feeds.values())))

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [{k: v[i : i + CALIBRATION_BATCH] for k, v in feeds.items()} for i in range(0, n, CALIBRATION_BATCH)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return _Reader()


def calibration_index(n_rows: int, n: int, seed: int = 0) -> np.ndarray | None:
    """`n` of `n_rows` row numbers drawn without replacement, sorted (seeded; a user file's train
    rows may be sorted); None when n covers them all."""
    if n >= n_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, n, replace=False))


def calibration_rows(x_train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` train rows of the feature matrix (calibration_index)."""
    idx = calibration_index(len(x_train), n, seed)
    return np.ascontiguousarray(x_train if idx is None else x_train[idx], dtype=np.float32)


def quantize_model(src: Path, dest: Path, mode: str,
                   calibration: np.ndarray | dict[str, np.ndarray] | None = None) -> None:
    """Write the int8 version of the fp32 model `src` to `dest`, keeping its metadata.
    `calibration` (static): the feature matrix of a numeric graph, or the graph's feeds."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode not in get_args(Quantization):
        raise ValueError(f"quantization: unknown mode {mode!r} (allowed: {allowed(Quantization)})")
    if mode == "none":
        shutil.copyfile(src, dest)
        return
    try:
        with _quiet_hint():
            if mode == "dynamic":
                quantize_dynamic(_prepared(src), dest, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTISED_OPS)
            else:
                feeds = {INPUT_NAME: calibration} if isinstance(calibration, np.ndarray) else calibration
                if not feeds or len(next(iter(feeds.values()))) == 0:
                    raise ExportError("static quantization needs calibration rows (export.calibration_rows)")
                quantize_static(
                    _prepared(src), dest, calibration_reader(feeds),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTISED_OPS,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"OpTypesToExcludeOutputQuantization": QUANTISED_OPS},
                )
    except ExportError:
        raise
    except Exception as exc:  # ORT's quantiser raises assorted types; keep it to one line
        raise ExportError(f"{mode} quantization failed: {type(exc).__name__}: {first_line(exc)}") from None
    _copy_metadata(src, dest)


def _copy_metadata(src: Path, dest: Path) -> None:
    """Carry the fp32 model's metadata_props (feature names, classes) into the int8 file."""
    fp32 = onnx.load(str(src), load_external_data=False)
    int8 = onnx.load(str(dest))
    props = {p.key: p.value for p in int8.metadata_props}
    props.update({p.key: p.value for p in fp32.metadata_props})
    onnx.helper.set_model_props(int8, props)
    onnx.save_model(int8, str(dest))
    onnx.checker.check_model(str(dest), full_check=True)
