"""k-fold cross-validation on train+val (evaluate.cv_folds): how much the held-out score moves
from one sample of rows to another, which a single small test split cannot tell.

The rows of train+val are dealt into k folds (seeded by train.seed; stratified by class for
classification, so every fold holds each class in its share). For each fold a model is trained
with the run's TrainParams by `train_model` on the other k-1 folds and scored on the held-out
fold with the metrics of the test split (metrics.compute_metrics).

Early stopping needs a validation split, and the held-out fold must not be it: a fold that
picks the epoch it is then scored on reports a score chosen for it. So each fold carves an inner
val out of its training folds (stratified too), in the run's own val : train ratio (the splits'
sizes), and the model is trained on the rest; the held-out fold is used for scoring only. Each
fold model is thus made as the run's model was (train on one part, stop on another), with
(k-1)/k of its rows.

What the model is fitted on is refitted per fold on that fold's training rows: scaling, the
target transform and imputation inside `train_model` (as for the run), and for the raw layout
(user files, mixed) the schema too: missing rates and category vocabularies (columns.TrainStats,
as generate does on the train split). Column kinds stay as generate typed them from the whole
table.

The folds run at once, one per core (at most k), each on a single torch thread, so the figures
do not depend on how many run at once: in forked processes on CPU (threads gain less: a small
model's step is mostly Python, under the GIL), in threads on CUDA (see `forks_here`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stages.core.contracts import DATA_DIR, Meta
from stages.core.errors import DataError, ParamsError
from stages.core.params import TrainParams
from stages.data.columns import TrainStats
from stages.data.encoding import encode_frame
from stages.data.splits import Split, frame_to_split, load_splits, read_split_frame
from stages.evaluation.metrics import compute_metrics
from stages.evaluation.scoring import predict
from stages.training.loop import resolve_device, train_model

log = logging.getLogger(__name__)

POOLED = ("train", "val")  # the splits cross-validation deals into folds; test stays untouched
# per-fold metrics that are not a score to average: standard errors within a fold, the table
NOT_AVERAGED = ("mse_se", "log_loss_se", "confusion_matrix")
MIN_FOLD_ROWS = 2  # held-out rows per fold (R² needs two)


@dataclass(frozen=True)
class Pool:
    """train+val as one table: the model's input (numeric layout) or the raw feature frame (raw
    layout: encoded per fold with the fold's schema), and the targets."""

    y: np.ndarray
    val_share: float  # val's share of train+val: the run's own ratio, kept by each fold's inner val
    x: np.ndarray | None = None
    frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.y)


# ------------------------------------------------------------------------------ the folds


def _groups(n: int, labels: np.ndarray | None) -> list[np.ndarray]:
    """The row groups a split is stratified over: one per class, or all rows."""
    return [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]


def fold_ids(n: int, k: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Fold 0..k-1 of each row: seeded, near-equal fold sizes; with `labels`, each class dealt
    round-robin over the folds in a seeded order (fold class counts differ by at most one)."""
    rng = np.random.default_rng(seed)
    folds = np.empty(n, dtype=np.int64)
    start = 0
    for idx in _groups(n, labels):
        # continuing the round-robin from the last class keeps the fold sizes within one row too
        folds[rng.permutation(idx)] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return folds


def inner_val(rows: np.ndarray, share: float, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Which of a fold's training `rows` (row ids) become its early-stopping val: `share` of them
    (at least one), seeded, stratified by `labels` (the labels of `rows`) when given."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(rows), dtype=bool)
    for idx in _groups(len(rows), labels):
        val[rng.permutation(idx)[: round(len(idx) * share)]] = True
    if not val.any():
        val[rng.integers(len(rows))] = True
    return val


def fold_rows(folds: np.ndarray, fold: int, share: float, seed: int,
              labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row ids of fold `fold`'s train, val (early stopping) and test (the held-out fold, scored
    only). The inner val comes from the training folds alone, never from the held-out one."""
    test = np.flatnonzero(folds == fold)
    rest = np.flatnonzero(folds != fold)
    val = inner_val(rest, share, seed + fold, None if labels is None else labels[rest])
    return {"train": rest[~val], "val": rest[val], "test": test}


def check_folds(k: int, y: np.ndarray, meta: Meta) -> None:
    """A ParamsError when k folds of these rows leave a fold too small: fewer than MIN_FOLD_ROWS
    held-out rows, or (classification) a class with fewer rows than folds."""
    n = len(y)
    if n < k * MIN_FOLD_ROWS:
        raise ParamsError(f"evaluate.cv_folds: {k} folds of {n} train+val rows leave fewer than {MIN_FOLD_ROWS} "
                          f"rows per fold; lower evaluate.cv_folds (at most {n // MIN_FOLD_ROWS}) or use more data")
    if meta.task == "classification":
        counts = np.bincount(y.astype(np.int64), minlength=len(meta.classes or []))
        rare = int(np.argmin(counts))
        if counts[rare] < k:
            fix = (f"lower evaluate.cv_folds (at most {int(counts[rare])})" if counts[rare] >= 2
                   else "turn cross-validation off (evaluate.cv_folds: 0)")
            raise ParamsError(f"evaluate.cv_folds: {k} folds, but class {meta.classes[rare]!r} has {int(counts[rare])} "
                              f"train+val rows: each fold needs one of every class; {fix} or use more data")


# ------------------------------------------------------------------------------- the data


def load_pool(meta: Meta, data_dir: str | Path = DATA_DIR, splits: dict[str, Split] | None = None) -> Pool:
    """train+val in one Pool. Numeric layout: the arrays (from `splits` when the caller has them);
    raw layout: the feature frame, encoded per fold."""
    if meta.columns is None:
        splits = splits if splits is not None else load_splits(data_dir, meta, POOLED)
        share = len(splits["val"].y) / (len(splits["train"].y) + len(splits["val"].y))
        return Pool(x=np.concatenate([splits[s].x for s in POOLED]), y=np.concatenate([splits[s].y for s in POOLED]),
                    val_share=share)
    columns = [*meta.feature_names, meta.target]
    frames = [read_split_frame(s, data_dir, columns) for s in POOLED]
    frame = pd.concat(frames, ignore_index=True)
    y = frame_to_split(frame, meta, "train+val").y
    return Pool(frame=frame[list(meta.feature_names)], y=y, val_share=len(frames[1]) / len(frame))


def fold_data(pool: Pool, rows: dict[str, np.ndarray], meta: Meta,
              min_category_count: int) -> tuple[dict[str, Split], Meta]:
    """A fold's splits as the model takes them, and the meta they go with: for the raw layout the
    schema (missing rates, vocabularies) fitted on the fold's train rows, as generate fits it on
    the train split, and every split encoded with it."""
    if pool.frame is None:
        return {name: Split(x=pool.x[idx], y=pool.y[idx]) for name, idx in rows.items()}, meta
    stats = TrainStats({c.name: c.kind for c in meta.columns})
    stats.add(pool.frame.iloc[rows["train"]])
    fold_meta = replace(meta, columns=stats.columns(min_category_count))
    splits = {name: Split(x=encode_frame(pool.frame.iloc[idx], fold_meta.columns, f"cv {name} rows"),
                          y=pool.y[idx]) for name, idx in rows.items()}
    return splits, fold_meta


# ------------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class CVPlan:
    """Everything a fold needs, shared by the folds (read only)."""

    params: TrainParams
    meta: Meta
    pool: Pool
    folds: np.ndarray
    min_category_count: int


def run_fold(plan: CVPlan, fold: int) -> dict[str, Any]:
    """Train on fold `fold`'s training rows, early-stop on its inner val, score the held-out fold."""
    labels = plan.pool.y if plan.meta.task == "classification" else None
    rows = fold_rows(plan.folds, fold, plan.pool.val_share, plan.params.seed, labels)
    splits, meta = fold_data(plan.pool, rows, plan.meta, plan.min_category_count)
    test = splits.pop("test")
    result = train_model(plan.params, splits, meta)
    out = predict(result.model, test.x)
    if not np.isfinite(out).all():
        raise DataError(f"cv fold {fold + 1}: the model gives non-finite outputs on the held-out rows")
    metrics = compute_metrics(meta.task, test.y, out, meta.n_classes)
    log.info("cv fold %d: %d train, %d val, %d held out; %d epochs", fold + 1, len(rows["train"]),
             len(rows["val"]), len(rows["test"]), result.metrics["epochs_run"])
    return {k: v for k, v in metrics.items() if k not in NOT_AVERAGED}


def aggregate(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{metric: {mean, std, folds}} over the folds' scores; std is the sample std (ddof 1) across
    folds. A metric undefined in a fold (None) is averaged over the folds that define it."""
    out: dict[str, dict[str, Any]] = {}
    for name in per_fold[0]:
        folds = [m[name] for m in per_fold]
        values = np.array([v for v in folds if v is not None], dtype=np.float64)
        out[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else (0.0 if len(values) else None),
            "folds": folds,
        }
    return out


def default_workers(k: int) -> int:
    """Folds at once: one per core this process may use, at most k."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(k, cores))


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Each fold on one torch thread (the pool is process-wide, so set once around all folds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cross_validate(params: TrainParams, meta: Meta, k: int, *, min_category_count: int,
                   data_dir: str | Path = DATA_DIR, splits: dict[str, Split] | None = None,
                   workers: int | None = None) -> dict[str, Any]:
    """eval.json's `cv`: {k, n, metric: {mean, std, folds}} of k-fold CV on train+val.

    `splits`: the loaded train and val splits, reused for the numeric layout; `workers`: folds
    trained at once (default: one per core); the figures do not depend on it."""
    pool = load_pool(meta, data_dir, splits)
    check_folds(k, pool.y, meta)
    labels = pool.y if meta.task == "classification" else None
    plan = CVPlan(params=params, meta=meta, pool=pool, folds=fold_ids(len(pool), k, params.seed, labels),
                  min_category_count=min_category_count)
    workers = workers or default_workers(k)
    processes = workers > 1 and forks_here(params)
    log.info("%d-fold cross-validation on %d train+val rows, %d at a time%s", k, len(pool), workers,
             " (processes)" if processes else "")
    with single_torch_thread():
        per_fold = run_folds(plan, k, workers, processes=processes)
    return {"k": k, "n": len(pool), **aggregate(per_fold)}


def forks_here(params: TrainParams) -> bool:
    """Folds in forked processes: on CPU where fork exists (Linux). Not on CUDA: a forked child
    cannot use CUDA once the parent has, and folds on one GPU share it well from threads."""
    return "fork" in multiprocessing.get_all_start_methods() and resolve_device(params.device).type == "cpu"


def run_folds(plan: CVPlan, k: int, workers: int, *, processes: bool) -> list[dict[str, Any]]:
    """Each fold's scores, in fold order: one at a time (workers 1), or `workers` at once in
    forked processes (each on one torch thread; fork, not spawn: a spawned child imports torch
    again, which costs more than a small fold) or in threads (the GIL holds them back)."""
    if workers == 1:
        return [run_fold(plan, fold) for fold in range(k)]
    if processes:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                                 initargs=(1,)) as executor:
            return list(executor.map(run_fold, [plan] * k, range(k)))
    with ThreadPoolExecutor(workers) as executor:
        return list(executor.map(lambda fold: run_fold(plan, fold), range(k)))

