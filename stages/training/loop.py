"""The training loop: fit the model on the train split, early-stop on the val split.

`train_model` is pure in-process training (a sweep calls it from threads): no global RNG or
torch settings are touched, and nothing is written unless `checkpoint_dir` or `live` is given.
The data goes onto the device once as tensors; each epoch permutes it with a seeded generator
and slices batches (no DataLoader, no per-sample Python). After every epoch the objective
without the penalty is evaluated on the full train and val splits in eval mode, so the two
curves are comparable.

The file reads top to bottom as a run does: set up (`setup_training`), one epoch (`run_epoch`),
then the run itself (`train_model`: resume, epochs, early stopping, checkpoint, callbacks).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.core.contracts import CHECKPOINT_NAME, META_PATH, Meta, ModelConfig, split_path
from stages.core.errors import DataError, ParamsError, TrainingDiverged
from stages.core.params import TrainParams
from stages.core.resources import check_fits, device_memory
from stages.data.splits import Split
from stages.training import distributed, optim
from stages.training.callbacks import EpochCallback, Progress, close_callbacks, epoch_callbacks
from stages.training.checkpoint import Checkpointer, RunState, run_fingerprint
from stages.training.early_stopping import EarlyStopping
from stages.training.models import (
    build_model,
    fit_scaling,
    network_size,
    set_dropout_generator,
    weight_tensors,
)
from stages.training.optim import lr_at, make_loss, make_optimizer, make_penalty_grad, resolve_loss
from stages.training.preprocessing import check_encoded
from stages.training.sizing import auto_values, sized_for
from stages.training.targets import resolve_target_transform

log = logging.getLogger(__name__)


EVAL_CHUNK = 65536  # rows per forward pass when evaluating a whole split


@dataclass
class TrainResult:
    model: nn.Module  # on CPU, eval mode, best weights restored (when early stopping is on)
    config: ModelConfig
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("train.device: 'cuda' but no CUDA device is available here (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"train.device: unknown device {name!r} (allowed: auto, cpu, cuda)")
    return torch.device(name)


def model_config(p: TrainParams, meta: Meta, y_train: np.ndarray | None = None) -> ModelConfig:
    """The model description saved with the weights: the schema (meta.columns; None for all-numeric
    data), and the target transform train.target_transform picks for the train targets `y_train`
    (auto without them: none)."""
    task = meta.task
    classes = meta.classes if task == "classification" else None
    if task == "classification" and not classes:
        raise DataError(f"{META_PATH}: task is classification but 'classes' is empty")
    columns = list(meta.columns) if meta.columns is not None else None
    return ModelConfig(
        task=task,
        feature_names=list(meta.feature_names),
        target=meta.target,
        classes=list(classes) if classes else None,
        n_features=len(meta.feature_names),
        n_outputs=len(classes) if classes else 1,
        model=p.model,
        hidden=list(p.hidden) if p.model == "mlp" else [],
        activation=p.activation,
        dropout=p.dropout if p.model == "mlp" else 0.0,
        scaling=p.scaling,
        loss=resolve_loss(p.loss, task),
        huber_delta=p.huber_delta,
        columns=columns,
        target_transform=resolve_target_transform(p.target_transform, task, y_train),
        max_one_hot=p.max_one_hot if columns is not None else None,  # numeric-only configs keep their bytes
    )


def on_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """`a` as a tensor on `device`: on CPU it shares numpy's memory (nothing here writes to its
    inputs); copied for another device, or when `a` is read-only (a view of a parquet buffer)."""
    return torch.from_numpy(a).to(device) if a.flags.writeable else torch.tensor(a, device=device)


def check_splits(splits: dict[str, Split], cfg: ModelConfig) -> None:
    """Shapes, finiteness and label range: a bad split is a DataError, not a NaN loss later.

    With a schema, NaN is a missing value where the model imputes it (preprocessing.check_encoded)."""
    for name in ("train", "val"):
        if name not in splits:
            raise DataError(f"{split_path(name)}: split {name!r} missing")
        s = splits[name]
        if s.x.ndim != 2 or s.x.shape[1] != cfg.n_features or len(s.x) == 0 or len(s.y) != len(s.x):
            raise DataError(
                f"{split_path(name)}: features of shape {s.x.shape} with {len(s.y)} targets; "
                f"expected rows x {cfg.n_features} and one target per row"
            )
        if cfg.columns is not None:
            problem = check_encoded(s.x, cfg.columns, train=name == "train")
            if problem:
                raise DataError(f"{split_path(name)}: {problem}")
        elif not np.isfinite(s.x).all():
            raise DataError(f"{split_path(name)}: {int((~np.isfinite(s.x)).sum())} missing or infinite feature values")
        if cfg.task == "regression" and not np.isfinite(s.y).all():
            raise DataError(f"{split_path(name)}: {int((~np.isfinite(s.y)).sum())} missing or infinite targets")
        if cfg.task == "classification" and (s.y.min() < 0 or s.y.max() >= cfg.n_outputs):
            raise DataError(
                f"{split_path(name)}: class labels outside 0..{cfg.n_outputs - 1} "
                f"(found {int(s.y.min())}..{int(s.y.max())})"
            )


@torch.inference_mode()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: optim.LossFn,
                  prepared: bool = False) -> float:
    """Mean loss of `model` (eval mode, target units) over a whole split, in chunks; `prepared`:
    x is model.prepare's output (as the loop holds its splits), else raw features."""
    model.eval()
    forward = (lambda rows: model.output(model.head(rows))) if prepared else model
    total = 0.0
    for i in range(0, len(x), EVAL_CHUNK):
        total += float(loss_fn(forward(x[i : i + EVAL_CHUNK]), y[i : i + EVAL_CHUNK])) * len(x[i : i + EVAL_CHUNK])
    return total / len(x)


@torch.no_grad()
def prepare_split(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A split as the model's `head` takes it, prepared once rather than every batch and epoch (the
    same values: prepare has no trained part); the split itself for a numeric-only model."""
    if getattr(model, "encoder", None) is None:
        return x
    return torch.cat([model.prepare(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])


# ------------------------------------------------------------------------------------ set up


@dataclass
class TrainingSetup:
    """Everything the epochs of a run work with, built once by `setup_training`."""

    params: TrainParams
    device: torch.device
    cfg: ModelConfig  # model_config
    precision: str  # "bf16" (CUDA autocast) or "fp32"
    autocast: Callable[[], Any]  # the training forward's context
    gens: dict[str, torch.Generator]  # "cpu": init, then the epochs' permutations; "dropout" if any
    model: nn.Module
    x_train: torch.Tensor  # the splits on the device, prepared (prepare_split); targets in their own units
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    y_fit: torch.Tensor  # the target the optimizer fits (standardised for regression)
    train_loss_fn: optim.LossFn  # the objective on y_fit
    eval_loss_fn: optim.LossFn  # the objective in the target's units, for the history
    optimizer: torch.optim.Optimizer
    penalty_grad: Callable | None
    batch: int  # rows per (global) optimizer step
    sharded: distributed.ShardedTraining  # this rank's part (alone: every row)
    auto_params: dict[str, float] = field(default_factory=dict)  # what train.* `auto` stood for in this run


def setup_training(p: TrainParams, splits: dict[str, Split], meta: Meta) -> TrainingSetup:
    """Check the inputs and build the model, the data on the device and the objective."""
    sized = sized_for(p, len(splits["train"].y))
    auto_params, p = auto_values(p, sized), sized
    device = resolve_device(p.device)
    cfg = model_config(p, meta, splits["train"].y if "train" in splits else None)
    check_splits(splits, cfg)
    check_memory(p, cfg, splits, device)
    precision, autocast = precision_mode(p, device)
    model, gens = _seeded_model(p, cfg, splits["train"], device)
    x_train = prepare_split(model, on_device(splits["train"].x, device))
    x_val = prepare_split(model, on_device(splits["val"].x, device))
    y_train, y_val = on_device(splits["train"].y, device), on_device(splits["val"].y, device)
    y_fit, train_loss_fn, eval_loss_fn = training_objective(p, cfg, model, y_train)
    optimizer = make_optimizer(p, model.parameters())
    n = len(x_train)
    batch = n if p.optimizer == "gd" else min(p.batch_size, n)
    return TrainingSetup(
        params=p, device=device, cfg=cfg, precision=precision, autocast=autocast, gens=gens, model=model,
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, y_fit=y_fit,
        train_loss_fn=train_loss_fn, eval_loss_fn=eval_loss_fn, optimizer=optimizer,
        penalty_grad=make_penalty_grad(p), batch=batch,
        sharded=distributed.ShardedTraining(model, n, batch, device),  # single process: the plain loop
        auto_params=auto_params,
    )


def check_memory(p: TrainParams, cfg: ModelConfig, splits: dict[str, Split], device: torch.device) -> None:
    """Refuse a model or data that cannot fit on `device` before anything is allocated: the
    weights 5 times over (weights, gradients, two optimizer states, the best epoch's copy), the
    splits on the device plus each epoch's shuffled copy of train, and a batch's activations."""
    n_prepared, n_inputs, n_tables = network_size(cfg)
    widths = [n_inputs, *cfg.hidden, cfg.n_outputs]
    n_params = sum(a * b + b for a, b in zip(widths, widths[1:])) + n_tables
    n_train, n_val = len(splits["train"].x), len(splits["val"].x)
    rows = max(min(p.batch_size, n_train), min(65536, n_train + n_val))  # a batch, or an eval chunk
    check_fits(
        f"train ({n_params:.3g} parameters on {device.type})",
        {"model": 4 * 5 * n_params, "data": 4 * (2 * n_train + n_val) * (n_prepared + 1),
         "activations": 4 * 3 * rows * sum(widths)},
        f"lower train.hidden (now {list(p.hidden)}) or use fewer rows or features", device_memory(device),
    )


def precision_mode(p: TrainParams, device: torch.device) -> tuple[str, Callable[[], Any]]:
    """bf16 autocast when asked for on CUDA, else fp32 (with a warning when bf16 was asked for)."""
    if p.precision == "bf16" and device.type == "cuda":
        return "bf16", lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if p.precision == "bf16":
        log.warning("train.precision bf16 is CUDA only; training in fp32 on %s", device.type)
    return "fp32", contextlib.nullcontext


def _seeded_model(p: TrainParams, cfg: ModelConfig, train: Split,
                  device: torch.device) -> tuple[nn.Module, dict[str, torch.Generator]]:
    """The initial model, scaled on the train split, on `device`; and the run's generators."""
    # local generators, never torch's global RNG: threads of a sweep must not share one
    gens = {"cpu": torch.Generator().manual_seed(p.seed)}
    model = build_model(cfg, generator=gens["cpu"])
    fit_scaling(model, train.x, train.y, p.scaling)
    model.to(device)
    if cfg.dropout > 0:
        gens["dropout"] = torch.Generator(device=device).manual_seed(p.seed + 1)
        set_dropout_generator(model, gens["dropout"])
    return model, gens


def training_objective(p: TrainParams, cfg: ModelConfig, model: nn.Module,
               y_train: torch.Tensor) -> tuple[torch.Tensor, optim.LossFn, optim.LossFn]:
    """(target to fit, loss on it, loss in the target's units)."""
    eval_loss_fn = make_loss(cfg.loss, p.huber_delta)
    if cfg.task != "regression":
        return y_train, eval_loss_fn, eval_loss_fn
    # the optimiser works on the standardised target; the objective is the same up to
    # the factor y_std² (Huber too, with delta scaled alike), so lr means the same for any units.
    # With a target transform it fits the transformed target (Huber's delta then reads in its
    # units); the history and metrics stay in the target's units (eval_loss_fn on forward)
    return model.fit_target(y_train), make_loss(cfg.loss, p.huber_delta / model.y_std.item()), eval_loss_fn


# ---------------------------------------------------------------------------------- an epoch


def run_epoch(s: TrainingSetup, epoch: int) -> dict[str, Any]:
    """Train epoch `epoch` (from 0), then measure it on both whole splits: its history record."""
    t0 = time.perf_counter()
    lr = lr_at(s.params, epoch)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    xs, ys = _epoch_rows(s)
    _optimizer_steps(s, xs, ys)
    train_loss = s.sharded.evaluate(evaluate_loss, s.model, s.x_train, s.y_train, s.eval_loss_fn, True)
    val_loss = s.sharded.evaluate(evaluate_loss, s.model, s.x_val, s.y_val, s.eval_loss_fn, True)
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        bad = train_loss if not math.isfinite(train_loss) else val_loss
        raise TrainingDiverged(
            f"training diverged at epoch {epoch + 1} (loss {bad}); lower train.lr (now {s.params.lr:g}) "
            "or set train.grad_clip"
        )
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "lr": lr, "epoch_seconds": seconds}


def _epoch_rows(s: TrainingSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's training rows and fit targets in this epoch's (seeded, shuffled) order.

    One gather per epoch, so the batches are free slices; full batch needs no order at all."""
    n = len(s.x_train)
    rows = s.sharded.rows_of(torch.randperm(n, generator=s.gens["cpu"]) if s.batch < n else None)
    if rows is None:
        return s.x_train, s.y_fit
    rows = rows.to(s.device)
    return s.x_train[rows], s.y_fit[rows]


def _optimizer_steps(s: TrainingSetup, xs: torch.Tensor, ys: torch.Tensor) -> None:
    """One pass over the epoch's rows, one step per (start, stop, scale) slice of sharded.steps.

    `scale` weighs a rank's piece of a global batch (1 in a single process; see distributed.py)."""
    s.model.train()
    weights = weight_tensors(s.model)
    for lo, hi, scale in s.sharded.steps:
        with s.autocast():
            loss = s.train_loss_fn(s.sharded.forward(xs[lo:hi]), ys[lo:hi])
        if scale != 1.0:
            loss = loss * scale
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.penalty_grad is not None:
            s.penalty_grad(weights)  # the penalty term's exact gradient, cheaper than its graph
        if s.params.grad_clip is not None:
            nn.utils.clip_grad_norm_(s.model.parameters(), s.params.grad_clip)
        s.optimizer.step()


# ------------------------------------------------------------------------------------ the run


def train_model(
    params: TrainParams,
    splits: dict[str, Split],
    meta: Meta,
    *,
    checkpoint_dir: Path | None = None,
    live: Any = None,
    progress: Progress = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train a model on splits['train'], early-stopping on splits['val'].

    `live` is a dvclive.Live (metrics per epoch); `progress`: a tqdm bar on stderr ("bar") or log lines at a steady cadence ("log");
    `on_epoch_end` is called with each epoch's history record after its checkpoint is written
    (raising from it stops the run there).
    """
    s = setup_training(params, splits, meta)
    p = s.params

    # resume: a checkpoint of this very run puts the model, optimizer, RNGs and state back
    state = RunState(EarlyStopping(p.early_stopping.patience, p.early_stopping.min_delta))
    checkpointer = _checkpointer(checkpoint_dir, s, splits)
    checkpointer.restore(state)
    start = state.epoch
    callbacks = epoch_callbacks(live, progress, on_epoch_end, p.epochs, start, state.history, len(s.x_train))

    stopped = False
    for epoch in range(start, p.epochs):
        rec = run_epoch(s, epoch)
        state.end_epoch(rec)
        # termination: rank 0's early-stopping decision holds on every rank
        stopped = s.sharded.agree(state.early_stopping.update(rec["epoch"], rec["val_loss"], s.model))
        checkpointer.maybe_save(state, last=stopped or rec["epoch"] == p.epochs)
        for callback in callbacks:
            callback(rec)
        if stopped:
            log.info("early stopping at epoch %d: no val improvement for %d epochs", rec["epoch"],
                     p.early_stopping.patience)
            break
    close_callbacks(callbacks)
    return _finish(s, state, start, stopped)


def _checkpointer(checkpoint_dir: Path | None, s: TrainingSetup, splits: dict[str, Split]) -> Checkpointer:
    """The run's checkpointer: off without a checkpoint_dir; rank 0 alone writes."""
    path = fingerprint = None
    if checkpoint_dir is not None:
        path = Path(checkpoint_dir) / CHECKPOINT_NAME
        fingerprint = run_fingerprint(s.params, splits, s.cfg, s.device)
    return Checkpointer(path, fingerprint, s.params.checkpoint_every, model=s.model, optimizer=s.optimizer,
                        gens=s.gens, device=s.device, writes=s.sharded.is_main)


def _finish(s: TrainingSetup, state: RunState, start: int, stopped: bool) -> TrainResult:
    """The model on CPU in eval mode, best weights back when early stopping kept them; its metrics."""
    stopper = state.early_stopping
    restored = stopper.restore_best(s.model)
    set_dropout_generator(s.model, None)
    s.model.to("cpu").eval()
    final = state.history[-1]
    n = len(s.x_train)
    metrics = {
        "epochs_run": state.epoch,
        "best_epoch": stopper.best_epoch,
        "train_loss": final["train_loss"],
        "val_loss": final["val_loss"],
        "best_val_loss": stopper.best_loss,
        "restored_best": restored,
        "stopped_early": stopped,
        "wall_seconds": round(state.elapsed, 3),
        "samples_per_second": round(n * state.epoch / state.elapsed, 1) if state.elapsed > 0 else None,
        "device": s.device.type,
        "precision": s.precision,
        "loss": s.cfg.loss,
        "n_train": n,
        "n_val": len(s.x_val),
        "resumed_from_epoch": start,
        "world_size": s.sharded.world.size,
    }
    if s.auto_params:
        metrics["auto_params"] = s.auto_params
    kept = (f"the epoch-{stopper.best_epoch} weights (best val {stopper.best_loss:.4g}) are kept" if restored
            else f"best val {stopper.best_loss:.4g} at epoch {stopper.best_epoch}")
    log.info("trained %d epochs in %.1f s: last epoch train %s %.4g, val %.4g; %s", state.epoch, state.elapsed,
             s.cfg.loss, final["train_loss"], final["val_loss"], kept)
    return TrainResult(model=s.model, config=s.cfg, metrics=metrics, history=state.history)
