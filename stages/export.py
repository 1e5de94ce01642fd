"""Stage `export`: the trained model as ONNX (fp32, parity-checked) and int8, with metrics
(stages/serving/onnx.py does the work; this entry point reads and writes).
"""

from __future__ import annotations

import logging

from stages.core.contracts import (
    DATA_DIR,
    EXPORT_METRICS_PATH,
    INT8_PATH,
    MODEL_PATH,
    ONNX_PATH,
    check_model_fits,
    load_meta,
)
from stages.core.errors import run_main
from stages.core.io import write_json
from stages.core.params import load_params
from stages.data.splits import load_splits, read_split_frame
from stages.serving.onnx import export_model
from stages.training.models import load_model

log = logging.getLogger(__name__)


def main() -> None:
    # export.exporter dynamo: its optimiser logs each pass at INFO; its op registry warns that
    # torchvision (whose ops a fitline model never uses) is not installed
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    params = load_params()
    meta = load_meta(DATA_DIR)
    model, cfg = load_model(MODEL_PATH)
    check_model_fits(cfg, meta)
    # test, and train for static calibration; train and val (only then) to fine-tune a pruned model
    pruning = params.export.prune.amount > 0
    checked = ("train", "test") if params.export.quantization == "static" else ("test",)
    splits = load_splits(DATA_DIR, meta, names=("train", "val", "test") if pruning else checked)
    # a raw-row model is checked (and calibrated) on the rows as users send them
    frames = {n: read_split_frame(n, DATA_DIR) for n in checked} if cfg.columns is not None else None
    metrics = export_model(params.export, model, cfg, splits, frames=frames, train_params=params.train if pruning else None)
    write_json(EXPORT_METRICS_PATH, metrics)
    log.info("wrote %s, %s and %s", ONNX_PATH, INT8_PATH, EXPORT_METRICS_PATH)


if __name__ == "__main__":
    run_main(main, "export")
