"""Stage `train`: fit the model on the train split, early-stop on the val split.

The training itself is `train_model` (stages/training/loop.py); a killed run resumes from its
checkpoint when rerun (stages/training/checkpoint.py). `main()` reads the params and splits,
trains (alone, or as the ranks of a distributed run), and has rank 0 write the model, metrics,
history and dvclive plots, and the saved model's outputs on every split (models/outputs.npz,
which evaluate scores). It then deletes the checkpoint: a finished run has nothing to resume,
and `dvc repro -f` then really retrains.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from stages.core.contracts import (
    CHECKPOINT_DIR,
    HISTORY_PATH,
    LIVE_DIR,
    MODEL_PATH,
    SPLITS,
    TRAIN_METRICS_PATH,
    Meta,
    history_csv,
    load_meta,
    write_model_outputs,
)
from stages.core.errors import run_main
from stages.core.io import write_json, write_text
from stages.core.params import load_params
from stages.data.splits import Split, load_splits, read_split
from stages.training import distributed
from stages.training.checkpoint import clear_checkpoint
from stages.training.loop import train_model
from stages.training.models import load_model, predict, save_model

log = logging.getLogger(__name__)


def _progress(is_main: bool) -> str | None:
    """A bar on a terminal; log lines elsewhere (CI, `fitline run`, Prefect's logs); rank 0 only."""
    if not is_main:
        return None
    return "bar" if sys.stderr.isatty() else "log"


def write_saved_model_outputs(meta: Meta, splits: dict[str, Split]) -> None:
    """models/outputs.npz: the outputs of the model as saved, and the targets, on every split,
    for evaluate to score without torch or parquet. The model is loaded back from its file on the
    CPU, as evaluate loaded it before, so eval.json does not depend on where training ran; test
    is scored here, never fitted."""
    model, cfg = load_model(MODEL_PATH)
    splits = {**splits, "test": read_split("test", meta)}
    write_model_outputs({name: predict(model, splits[name].x) for name in SPLITS},
                        {name: splits[name].y for name in SPLITS}, cfg)


def main() -> None:
    params = load_params()
    dist_p = params.train.distributed
    if dist_p.enabled and not distributed.launched():
        distributed.launch(dist_p.nproc, "stages.train", dist_p.backend)  # workers run this main()
        return
    with distributed.process_group(dist_p.backend, params.train.device) as world:
        meta = load_meta()
        splits = load_splits(meta=meta, names=("train", "val"))  # test is only scored, after training
        from dvclive import Live  # imported here: train_model itself needs no dvclive

        # rank 0 alone writes files; the others train their shards and read the checkpoint
        writer = Live(dir=LIVE_DIR, save_dvc_exp=False, dvcyaml=False) if world.is_main else contextlib.nullcontext()
        with writer as live:
            result = train_model(params.train, splits, meta, checkpoint_dir=CHECKPOINT_DIR, live=live,
                                 progress=_progress(world.is_main))
    if world.is_main:
        save_model(MODEL_PATH, result.model, result.config)
        write_saved_model_outputs(meta, splits)
        write_json(TRAIN_METRICS_PATH, result.metrics)
        write_text(HISTORY_PATH, history_csv(result.history))
        clear_checkpoint(CHECKPOINT_DIR)


if __name__ == "__main__":
    run_main(main, "train")
