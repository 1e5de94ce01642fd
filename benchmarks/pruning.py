"""What structured pruning costs in test R² and buys in ONNX Runtime latency and file size.

    .venv/bin/python benchmarks/pruning.py [--rows 20000] [--epochs 40] [--amounts 0.25,0.5,0.75]
                                           [--hidden 64,64 --hidden 256,256,256] [--repeats 20]

Generates the default data (friedman, params.yaml's data defaults; --rows overrides n_samples)
with the real generate stage into a temporary folder, trains each MLP once with the default
train params (--epochs overrides train.epochs), then exports it through the export stage's own
path (stages.serving.onnx.export_model) once per pruning amount, with export.prune.amount set
and the budget lifted (max_metric_drop 1: the benchmark reports the drop instead of failing).
Each row reads that run's metrics `pruning`: latency is ONNX Runtime, one thread, median of
--repeats calls, the unpruned and pruned models timed interleaved in one run. Prints a
markdown table; nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages import generate  # noqa: E402
from stages.core.params import DataParams, ExportParams, TrainParams  # noqa: E402
from stages.data.splits import load_splits  # noqa: E402
from stages.serving.onnx import export_model  # noqa: E402
from stages.training.loop import train_model  # noqa: E402


def _hidden(text: str) -> tuple[int, ...]:
    return tuple(int(w) for w in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=DataParams().n_samples)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--amounts", default="0.25,0.5,0.75")
    ap.add_argument("--hidden", type=_hidden, action="append")
    ap.add_argument("--fine-tune-epochs", type=int, default=ExportParams().prune.fine_tune_epochs)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    hiddens = args.hidden or [TrainParams().hidden, (256, 256, 256)]
    amounts = [float(a) for a in args.amounts.split(",")]
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    torch.set_num_threads(1)  # training and latency alike: the figures should not measure the neighbours

    lines = [
        "| hidden | amount | hidden after | params | test R² (unpruned) | R² drop | fp32 b1024 speed-up "
        "| int8 b1024 speed-up | fp32 b1 speed-up | size fp32 / pruned (KB) | size int8 / pruned (KB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        meta = generate.run(DataParams(n_samples=args.rows), Path(tmp) / "data")
        splits = load_splits(Path(tmp) / "data", meta)
        for hidden in hiddens:
            tp = TrainParams(hidden=hidden, epochs=args.epochs, device="cpu")
            t0 = time.perf_counter()
            trained = train_model(tp, splits, meta)
            print(f"trained {list(hidden)} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for amount in amounts:
                params = ExportParams(latency_repeats=args.repeats, max_metric_drop=1.0,
                                      prune={"amount": amount, "fine_tune_epochs": args.fine_tune_epochs})
                t0 = time.perf_counter()
                m = export_model(params, trained.model, trained.config, splits, Path(tmp) / f"m{amount}",
                                 train_params=tp)
                p = m["pruning"]
                print(f"  amount {amount}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                sp, kb = p["speedup"], {k: v / 1024 for k, v in p["size_bytes"].items()}
                lines.append(
                    f"| {list(hidden)} | {amount:g} | {p['hidden_after']} | {p['params_before']:,} -> "
                    f"{p['params_after']:,} | {p['test_metric_before']:.4f} | {p['metric_drop']:+.4f} | "
                    f"{sp['fp32']['batch_1024']:.2f}x | {sp['int8']['batch_1024']:.2f}x | {sp['fp32']['batch_1']:.2f}x | "
                    f"{kb['fp32']:.0f} / {kb['pruned_fp32']:.0f} | {kb['int8']:.0f} / {kb['pruned_int8']:.0f} |"
                )
    print(f"\nfriedman, {args.rows} rows; train: default params, {args.epochs} epochs; fine-tune "
          f"{args.fine_tune_epochs} epochs; latency: ONNX Runtime, 1 thread, median of {args.repeats}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
