"""The cost of k-fold cross-validation (evaluate.cv_folds), and how its folds are best run here.

On friedman data of each size (default params otherwise: mlp 64x64, adam, 200 epochs with
early stopping), in one process, interleaved repeats:
- `train`: one `train_model` on the train split (the train stage's work; torch's own threads);
- `cv seq`: stages.evaluation.cv.cross_validate with one fold at a time (one torch thread);
- `cv seq, N threads`: one fold at a time on torch's own threads (one per core) instead;
- `cv fork`: one fold per core in forked processes, each on one torch thread (what the stage
  does on CPU: cross_validate's default);
- `cv threads`: one fold per core in threads, each on one torch thread (the stage on CUDA);
- `cv spawn`: the folds in a spawned process pool instead (each process imports torch and the
  stages again).
The CV runs on one torch thread per fold give the same figures (checked).

    .venv/bin/python benchmarks/cv_cost.py                  # 1000 and 20000 rows, k = 5
    .venv/bin/python benchmarks/cv_cost.py --rows 1000 --repeats 5 --only train "cv seq" "cv fork"

Prints the median wall seconds of each, its ratio to the first (one training run), each
repeat's ratio to `cv seq` (paired: run back to back), and the CPU seconds of the last repeat
(this process and its children): on a shared machine the steadier figure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from stages.core.contracts import load_meta
from stages.core.params import DataParams, TrainParams
from stages.data.splits import load_splits
from stages.evaluation import cv
from stages.generate import run as generate
from stages.training.loop import train_model


def _one_thread() -> None:
    torch.set_num_threads(1)


def _plan(p: TrainParams, meta, data_dir: Path, k: int) -> cv.CVPlan:
    pool = cv.load_pool(meta, data_dir)
    labels = pool.y if meta.task == "classification" else None
    return cv.CVPlan(params=p, meta=meta, pool=pool, folds=cv.fold_ids(len(pool), k, p.seed, labels),
                     min_category_count=5)


def _result(plan: cv.CVPlan, per_fold: list[dict]) -> dict:
    return {"k": len(per_fold), "n": len(plan.pool), **cv.aggregate(per_fold)}


def cv_spawned(p: TrainParams, meta, data_dir: Path, k: int, workers: int) -> dict:
    """cross_validate's work with the folds in a spawned process pool (an alternative measured)."""
    plan = _plan(p, meta, data_dir, k)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread) as ex:
        return _result(plan, list(ex.map(cv.run_fold, [plan] * k, range(k))))


def cv_threads(p: TrainParams, meta, data_dir: Path, k: int, workers: int) -> dict:
    plan = _plan(p, meta, data_dir, k)
    with cv.single_torch_thread():
        return _result(plan, cv.run_folds(plan, k, workers, processes=False))


def cv_on_all_threads(p: TrainParams, meta, data_dir: Path, k: int) -> dict:
    """One fold at a time, each on torch's own thread pool (the alternative to parallel folds)."""
    plan = _plan(p, meta, data_dir, k)
    return _result(plan, [cv.run_fold(plan, fold) for fold in range(k)])


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


def measure(rows: int, k: int, repeats: int, only: list[str] | None = None) -> None:
    p = TrainParams()
    workers = cv.default_workers(k)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        generate(DataParams(kind="friedman", n_samples=rows), data_dir)
        meta = load_meta(data_dir)
        splits = load_splits(data_dir, meta, ("train", "val"))
        runs = {
            "train": lambda: train_model(p, splits, meta).metrics,
            "cv seq": lambda: cv.cross_validate(p, meta, k, min_category_count=5, data_dir=data_dir, workers=1),
            f"cv seq, {torch.get_num_threads()} threads": lambda: cv_on_all_threads(p, meta, data_dir, k),
            "cv fork": lambda: cv.cross_validate(p, meta, k, min_category_count=5, data_dir=data_dir, workers=workers),
            "cv threads": lambda: cv_threads(p, meta, data_dir, k, workers),
            "cv spawn": lambda: cv_spawned(p, meta, data_dir, k, workers),
        }
        runs = {name: fn for name, fn in runs.items() if not only or name.split(",")[0] in only}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, float] = {}
        results: dict[str, object] = {}
        for _ in range(repeats):
            for name, fn in runs.items():
                s, cpu[name], results[name] = timed(fn)
                seconds[name].append(s)
        same = [results[n] for n in ("cv seq", "cv fork", "cv threads", "cv spawn") if n in results]
        assert all(r == same[0] for r in same), "fold results differ"
        base = statistics.median(seconds["train" if "train" in seconds else next(iter(seconds))])
        r2 = next(r for n, r in results.items() if n != "train")["r2"]
        print(f"\n{rows} rows ({len(splits['train'].y)} train), k={k}, {workers} workers, "
              f"{os.cpu_count()} cores; R² {r2['mean']:.3f} ± {r2['std']:.3f}")
        for name, values in seconds.items():
            med = statistics.median(values)
            paired = (f"  / cv seq per repeat: {', '.join(f'{v / s:.2f}' for v, s in zip(values, seconds['cv seq']))}"
                      if "cv seq" in seconds and name != "cv seq" else "")
            print(f"  {name:18s} {med:7.1f} s  ({med / base:4.1f}x first)  CPU {cpu[name]:6.1f} s  "
                  "runs: " + ", ".join(f"{v:.1f}" for v in values) + paired)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=["train", "cv seq", "cv fork", "cv threads", "cv spawn"],
                    help="run only these (`cv seq` includes the all-threads variant)")
    args = ap.parse_args()
    for rows in args.rows:
        measure(rows, args.folds, args.repeats, args.only)


if __name__ == "__main__":
    main()
