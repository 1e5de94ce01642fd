"""The training loop: fit the model on the train split, early-stop on the val split.

`train_model` is pure in-process training (a sweep calls it from threads): no global RNG or
torch settings are touched, and nothing is written unless `checkpoint_dir` or `live` is given.
The data goes onto the device once as tensors; each epoch permutes it with a seeded generator
and slices batches (no DataLoader, no per-sample Python). After every epoch the objective
without the penalty is evaluated on the full train and val splits in eval mode, so the two
curves are comparable.
"""


from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.core.contracts import CHECKPOINT_NAME, HISTORY_COLUMNS
from stages.core.errors import DataError, ParamsError, TrainingDiverged
from stages.core.params import TrainParams
from stages.data.splits import Split
from stages.training import distributed, optim
from stages.training.checkpoint import RunState, restore_checkpoint, run_fingerprint, save_checkpoint
from stages.training.models import SeededDropout, build_model, fit_scaling, weight_tensors
from stages.training.optim import lr_at, make_loss, make_optimizer, make_penalty_grad, resolve_loss

log = logging.getLogger(__name__)


EVAL_CHUNK = 65536  # rows per forward pass when evaluating a whole split


@dataclass
class TrainResult:
    model: nn.Module  # on CPU, eval mode, best weights restored (when early stopping is on)
    config: dict[str, Any]
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


def model_config(p: TrainParams, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able model description saved with the weights."""
    task = meta["task"]
    classes = meta.get("classes") if task == "classification" else None
    if task == "classification" and not classes:
        raise DataError("data/meta.json: task is classification but 'classes' is empty")
    return {
        "task": task,
        "feature_names": list(meta["feature_names"]),
        "target": meta["target"],
        "classes": list(classes) if classes else None,
        "n_features": len(meta["feature_names"]),
        "n_outputs": len(classes) if classes else 1,
        "model": p.model,
        "hidden": list(p.hidden) if p.model == "mlp" else [],
        "activation": p.activation,
        "dropout": p.dropout if p.model == "mlp" else 0.0,
        "scaling": p.scaling,
        "loss": resolve_loss(p.loss, task),
        "huber_delta": p.huber_delta,
    }


def _on_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """`a` as a tensor on `device`: on CPU it shares numpy's memory (nothing here writes to its
    inputs); copied for another device, or when `a` is read-only (a view of a parquet buffer)."""
    return torch.from_numpy(a).to(device) if a.flags.writeable else torch.tensor(a, device=device)


def check_splits(splits: dict[str, Split], cfg: dict[str, Any]) -> None:
    """Shapes, finiteness and label range: a bad split is a DataError, not a NaN loss later."""
    for name in ("train", "val"):
        if name not in splits:
            raise DataError(f"data/{name}.parquet: split {name!r} missing")
        s = splits[name]
        if s.x.ndim != 2 or s.x.shape[1] != cfg["n_features"] or len(s.x) == 0 or len(s.y) != len(s.x):
            raise DataError(
                f"data/{name}.parquet: features of shape {s.x.shape} with {len(s.y)} targets; "
                f"expected rows x {cfg['n_features']} and one target per row"
            )
        if not np.isfinite(s.x).all():
            raise DataError(f"data/{name}.parquet: {int((~np.isfinite(s.x)).sum())} missing or infinite feature values")
        if cfg["task"] == "regression" and not np.isfinite(s.y).all():
            raise DataError(f"data/{name}.parquet: {int((~np.isfinite(s.y)).sum())} missing or infinite targets")
        if cfg["task"] == "classification" and (s.y.min() < 0 or s.y.max() >= cfg["n_outputs"]):
            raise DataError(
                f"data/{name}.parquet: class labels outside 0..{cfg['n_outputs'] - 1} "
                f"(found {int(s.y.min())}..{int(s.y.max())})"
            )


@torch.inference_mode()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: optim.LossFn) -> float:
    """Mean loss of `model` (eval mode, target units) over a whole split, in chunks."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), EVAL_CHUNK):
        total += float(loss_fn(model(x[i : i + EVAL_CHUNK]), y[i : i + EVAL_CHUNK])) * len(x[i : i + EVAL_CHUNK])
    return total / len(x)


def _log_live(live: Any, rec: dict[str, Any]) -> None:
    for key in HISTORY_COLUMNS[1:]:
        live.log_metric(key, rec[key])
    live.next_step()


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, xs: torch.Tensor, ys: torch.Tensor,
                 dp: distributed.DataParallel, loss_fn: optim.LossFn, penalty_grad: Callable | None,
                 grad_clip: float | None, autocast: Callable[[], Any]) -> None:
    """One pass over (already shuffled) rows, one step per (start, stop, scale) slice of dp.steps.

    `scale` weighs a rank's piece of a global batch (1 in a single process; stages/distributed.py)."""
    model.train()
    weights = weight_tensors(model)
    for lo, hi, scale in dp.steps:
        with autocast():
            loss = loss_fn(dp.forward(xs[lo:hi]), ys[lo:hi])
        if scale != 1.0:
            loss = loss * scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if penalty_grad is not None:
            penalty_grad(weights)  # the penalty term's exact gradient, cheaper than its graph
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


def train_model(
    params: TrainParams,
    splits: dict[str, Split],
    meta: dict[str, Any],
    *,
    checkpoint_dir: Path | None = None,
    live: Any = None,
    progress: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a model on splits['train'], early-stopping on splits['val'].

    `live` is a dvclive.Live (metrics per epoch); `progress` shows a tqdm bar on stderr;
    `on_epoch_end` is called with each epoch's history record after its checkpoint is written
    (raising from it stops the run there).
    """
    p = params
    device = resolve_device(p.device)
    cfg = model_config(p, meta)
    check_splits(splits, cfg)
    use_bf16 = p.precision == "bf16" and device.type == "cuda"
    if p.precision == "bf16" and not use_bf16:
        log.warning("train.precision bf16 is CUDA only; training in fp32 on %s", device.type)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    # local generators, never torch's global RNG: threads of a sweep must not share one
    gens = {"cpu": torch.Generator().manual_seed(p.seed)}  # init, then the per-epoch permutations
    model = build_model(cfg, generator=gens["cpu"])
    fit_scaling(model, splits["train"].x, splits["train"].y, p.scaling)
    model.to(device)
    if cfg["dropout"] > 0:
        gens["dropout"] = torch.Generator(device=device).manual_seed(p.seed + 1)
        for m in model.modules():
            if isinstance(m, SeededDropout):
                m.generator = gens["dropout"]

    x_train, y_train = _on_device(splits["train"].x, device), _on_device(splits["train"].y, device)
    x_val, y_val = _on_device(splits["val"].x, device), _on_device(splits["val"].y, device)
    eval_loss_fn = make_loss(cfg["loss"], p.huber_delta)
    if cfg["task"] == "regression":
        # the optimiser works on the standardised target; the objective is the same up to
        # the factor y_std² (Huber too, with delta scaled alike), so lr means the same for any units
        y_mean, y_std = model.y_mean.item(), model.y_std.item()
        y_fit = (y_train - y_mean) / y_std
        train_loss_fn = make_loss(cfg["loss"], p.huber_delta / y_std)
    else:
        y_fit, train_loss_fn = y_train, eval_loss_fn

    optimizer = make_optimizer(p, model.parameters())
    penalty_grad = make_penalty_grad(p)
    n = len(x_train)
    batch = n if p.optimizer == "gd" else min(p.batch_size, n)
    patience = p.early_stopping.patience
    dp = distributed.DataParallel(model, n, batch, device)  # single process: the plain loop

    run = RunState()
    ckpt_path = fingerprint = None
    if checkpoint_dir is not None:
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
        fingerprint = run_fingerprint(p, splits, cfg, device)
        run = restore_checkpoint(ckpt_path, fingerprint, model, optimizer, gens, device) or run
    start = run.epoch
    if live is not None:
        for rec in run.history:  # DVC clears dvclive/ before a rerun: replay the resumed epochs
            _log_live(live, rec)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=p.epochs, initial=start, desc="train", unit="epoch", file=sys.stderr, leave=False)

    stopped = False
    for epoch in range(start, p.epochs):
        t0 = time.perf_counter()
        lr = lr_at(p, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # one gather per epoch (this rank's shard of it), then the batches are free slices
        rows = dp.rows_of(torch.randperm(n, generator=gens["cpu"]) if batch < n else None)
        if rows is not None:
            rows = rows.to(device)
            xs, ys = x_train[rows], y_fit[rows]
        else:
            xs, ys = x_train, y_fit
        _train_epoch(model, optimizer, xs, ys, dp, train_loss_fn, penalty_grad, p.grad_clip, autocast)

        train_loss = dp.evaluate(evaluate_loss, model, x_train, y_train, eval_loss_fn)
        val_loss = dp.evaluate(evaluate_loss, model, x_val, y_val, eval_loss_fn)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            bad = train_loss if not math.isfinite(train_loss) else val_loss
            raise TrainingDiverged(
                f"training diverged at epoch {epoch + 1} (loss {bad}); lower train.lr (now {p.lr:g}) "
                "or set train.grad_clip"
            )
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "lr": lr, "epoch_seconds": seconds}
        run.epoch, run.elapsed = epoch + 1, run.elapsed + seconds
        run.history.append(rec)
        if val_loss < run.best_loss - p.early_stopping.min_delta:
            run.best_loss, run.best_epoch, run.bad_epochs = val_loss, epoch + 1, 0
            if patience is not None:
                run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            run.bad_epochs += 1
        stopped = dp.agree(patience is not None and run.bad_epochs >= patience)  # rank 0 decides

        if live is not None:
            _log_live(live, rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        last = stopped or epoch + 1 == p.epochs
        if ckpt_path is not None and dp.is_main and (epoch + 1) % p.checkpoint_every == 0 and not last:
            save_checkpoint(ckpt_path, fingerprint, run, model, optimizer, gens)
        if on_epoch_end is not None:
            on_epoch_end(rec)
        if stopped:
            log.info("early stopping at epoch %d: no val improvement for %d epochs", epoch + 1, patience)
            break
    if bar is not None:
        bar.close()

    restored = patience is not None and run.best_state is not None
    if restored:
        model.load_state_dict(run.best_state)
    for m in model.modules():
        if isinstance(m, SeededDropout):
            m.generator = None
    model.to("cpu").eval()
    final = run.history[-1]
    metrics = {
        "epochs_run": run.epoch,
        "best_epoch": run.best_epoch,
        "train_loss": final["train_loss"],
        "val_loss": final["val_loss"],
        "best_val_loss": run.best_loss,
        "restored_best": restored,
        "stopped_early": stopped,
        "wall_seconds": round(run.elapsed, 3),
        "samples_per_second": round(n * run.epoch / run.elapsed, 1) if run.elapsed > 0 else None,
        "device": device.type,
        "precision": "bf16" if use_bf16 else "fp32",
        "loss": cfg["loss"],
        "n_train": n,
        "n_val": len(x_val),
        "resumed_from_epoch": start,
        "world_size": dp.world.size,
    }
    log.info("trained %d epochs in %.1f s: train %s %.4g, val %.4g (best %.4g at epoch %d)",
             run.epoch, run.elapsed, cfg["loss"], final["train_loss"], final["val_loss"], run.best_loss, run.best_epoch)
    return TrainResult(model=model, config=cfg, metrics=metrics, history=run.history)
