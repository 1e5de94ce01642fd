"""Training throughput: the stage's `train_model` against a minimal hand-written PyTorch loop.

Both train the same model (stages.models.build_model, same init and scaling) on the same data
with the same batch size, optimizer and objective (loss + L2 penalty on the weights), for the
same number of epochs, in one process; repeats are interleaved so machine noise hits both alike.
The stage additionally does what the minimal loop leaves out: the per-epoch evaluation of the
full train and val splits (eval mode), the lr schedule, early-stopping bookkeeping and history.
Early stopping is off so both run every epoch; no checkpoints, no dvclive.

    .venv/bin/python benchmarks/train_throughput.py               # default params, CPU
    .venv/bin/python benchmarks/train_throughput.py --device cuda --rows 200000

Prints samples/s (training rows x epochs / wall seconds, median of the repeats) for both and
their ratio; the target is a ratio >= 0.95 on CPU.

`--categorical K` measures the raw-row input layer instead: the stage on the same data plus K
categorical columns (vocabularies of 2 to 144 categories, so both one-hot and embedded columns;
encoded with stages.data.encoding like a user's file) against the stage on all-numeric data:
the numeric columns alone, and the same table with the K columns numeric (noise) instead. The
target is a ratio >= 0.8. CPU time is printed beside wall time: on a shared machine it is
the steadier measure of the work done.

    .venv/bin/python benchmarks/train_throughput.py --categorical 10 The stage uses torch's fused Adam kernel and
adds the penalty's gradient directly; the minimal loop uses torch's default Adam and puts the
penalty in the loss (`--fused-minimal` gives it the fused kernel too). On a busy CPU set
OMP_WAIT_POLICY=PASSIVE (as the DVC stage does), else spinning OpenMP threads dominate.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import numpy as np
import pandas as pd

from stages.core.contracts import Column, Meta, load_meta
from stages.core.params import DataParams, TrainParams
from stages.data.encoding import encode_frame
from stages.data.splits import Split, load_splits
from stages.generate import run as generate
from stages.training.loop import model_config, train_model
from stages.training.models import build_model, fit_scaling, weight_tensors


def minimal_loop(p: TrainParams, splits: dict, meta: dict, device: torch.device, fused: bool = False) -> float:
    """The plainest loop a PyTorch user would write for the same job; returns wall seconds.

    `fused` gives it the stage's fused Adam kernel, to separate the stage's loop overhead
    from the speed-up of its optimizer choice."""
    t0 = time.perf_counter()
    cfg = model_config(p, meta)
    gen = torch.Generator().manual_seed(p.seed)
    model = build_model(cfg, generator=gen)
    fit_scaling(model, splits["train"].x, splits["train"].y, p.scaling)
    model.to(device).train()
    x = torch.tensor(splits["train"].x, device=device)
    y = (torch.tensor(splits["train"].y, device=device) - model.y_mean) / model.y_std
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=p.betas, **({"fused": True} if fused else {}))
    weights = weight_tensors(model)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if p.precision == "bf16" else contextlib.nullcontext
    n, bs = len(x), p.batch_size
    for _ in range(p.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            with autocast():
                loss = F.mse_loss(model.raw(x[idx]), y[idx])
                loss = loss + p.reg_strength * sum(w.square().sum() for w in weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def stage_loop(p: TrainParams, splits: dict, meta: dict) -> float:
    t0 = time.perf_counter()
    train_model(p, splits, meta)
    return time.perf_counter() - t0


VOCABULARIES = (2, 3, 5, 8, 13, 21, 34, 55, 89, 144)  # categories per added column, cycled


def with_columns(splits: dict, meta: Meta, k: int, kind: str, seed: int = 0) -> tuple[dict, Meta]:
    """The splits and meta plus k columns: categorical (random categories, 2% missing, encoded by
    encode_frame from strings as a user's file would be), or numeric noise (no schema: the
    numeric-only model)."""
    rng = np.random.default_rng(seed)
    columns = [Column(n) for n in meta.feature_names]
    extra = [Column(f"cat{i}", "categorical", 0.02, [f"v{j}" for j in range(VOCABULARIES[i % len(VOCABULARIES)])])
             if kind == "categorical" else Column(f"num{i}") for i in range(k)]
    out = {}
    for name, split in splits.items():
        frame = pd.DataFrame(split.x, columns=list(meta.feature_names))
        for c in extra:
            if kind == "categorical":
                values = rng.choice(np.array(c.vocabulary, dtype=object), len(frame))
                values[rng.random(len(frame)) < c.missing_rate] = None
            else:
                values = rng.standard_normal(len(frame)).astype(np.float32)
            frame[c.name] = values
        out[name] = Split(encode_frame(frame, columns + extra), split.y)
    names = [c.name for c in columns + extra]
    schema = columns + extra if kind == "categorical" else None
    return out, Meta(task=meta.task, feature_names=names, target=meta.target, columns=schema)


def timed_stage(p: TrainParams, splits: dict, meta: Meta) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one train_model run."""
    wall, cpu = time.perf_counter(), time.process_time()
    train_model(p, splits, meta)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare_categorical(p: TrainParams, splits: dict, meta: Meta, k: int, repeats: int) -> None:
    """The stage on all-numeric data (the numeric columns; plus k numeric columns), then on the
    numeric columns plus k categorical ones; repeats interleaved."""
    cases = {"numeric columns only": (splits, meta),
             f"+ {k} numeric columns": with_columns(splits, meta, k, "numeric"),
             f"+ {k} categorical columns": with_columns(splits, meta, k, "categorical")}
    for data, m in cases.values():
        timed_stage(p.model_copy(update={"epochs": 2}), data, m)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for r in range(repeats):
        for name in list(cases)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(timed_stage(p, *cases[name]))
    samples = len(splits["train"].x) * p.epochs
    rates = {}
    for name, times in runs.items():
        wall, cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
        rates[name] = samples / wall, samples / cpu
        print(f"{name:26s}: {rates[name][0]:10,.0f} samples/s wall, {rates[name][1]:10,.0f} per CPU second "
              f"(runs: {', '.join(f'{t[0]:.2f}s' for t in times)})")
    mixed = rates[f"+ {k} categorical columns"]
    for name in list(cases)[:2]:
        print(f"ratio categorical / {name}: {mixed[0] / rates[name][0]:.3f} wall, "
              f"{mixed[1] / rates[name][1]:.3f} CPU (medians; target >= 0.8)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="synthetic friedman rows (70%% train)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--fused-minimal", action="store_true",
                    help="give the minimal loop the stage's fused Adam too (isolates the loop's overhead)")
    ap.add_argument("--categorical", type=int, default=0,
                    help="compare the stage with this many categorical columns added against numeric only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        generate(DataParams(n_samples=args.rows), Path(tmp))
        meta = load_meta(tmp)
        splits = load_splits(tmp, meta)
    p = TrainParams(epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                    precision=args.precision, early_stopping={"patience": None})
    device = torch.device(args.device)
    n = len(splits["train"].x)
    print(f"device {args.device} ({torch.get_num_threads()} threads), {n} train rows, "
          f"{args.epochs} epochs, batch {p.batch_size}, {p.optimizer} lr {p.lr}, mlp {list(p.hidden)}, "
          f"{p.regularizer} {p.reg_strength}, precision {args.precision}")

    if args.categorical:
        compare_categorical(p, splits, meta, args.categorical, args.repeats)
        return
    stage_loop(p.model_copy(update={"epochs": 2}), splits, meta)  # warm-up (allocator, kernels)
    minimal_loop(p.model_copy(update={"epochs": 2}), splits, meta, device, args.fused_minimal)
    stage_s, minimal_s = [], []
    for r in range(args.repeats):
        # alternate which goes first, so drifting machine load hits both alike
        order = [("stage", stage_s), ("minimal", minimal_s)][:: 1 if r % 2 == 0 else -1]
        for name, times in order:
            times.append(stage_loop(p, splits, meta) if name == "stage"
                         else minimal_loop(p, splits, meta, device, args.fused_minimal))
    samples = n * args.epochs
    stage_rate = samples / statistics.median(stage_s)
    minimal_rate = samples / statistics.median(minimal_s)
    print(f"stage   train_model : {stage_rate:12,.0f} samples/s  (runs: {', '.join(f'{t:.2f}s' for t in stage_s)})")
    label = "minimal loop (fused)" if args.fused_minimal else "minimal PyTorch loop"
    print(f"{label}: {minimal_rate:12,.0f} samples/s  (runs: {', '.join(f'{t:.2f}s' for t in minimal_s)})")
    print(f"ratio stage/minimal : {stage_rate / minimal_rate:.3f} (medians)")
    # on a shared machine load spikes hit single runs: the fastest runs and the ratio within
    # each back-to-back pair are steadier estimates
    print(f"  best runs {min(minimal_s) / min(stage_s):.3f}, "
          f"median of paired ratios {statistics.median(m / s for s, m in zip(stage_s, minimal_s)):.3f}")


if __name__ == "__main__":
    main()
