"""The optimizer comparison: which optimizer trains this model fastest and best?

Every optimizer of params `sweep.compare` trains the same model on the same data, at each
learning rate of its small grid, for the same number of epochs with early stopping off (every
curve runs to the end). The best learning rate of each optimizer (lowest final val loss) is
kept, and the kept runs are compared:

- final val loss (MSE or log loss, the loss the fit diagnosis judges; lower is better);
- epochs and seconds to reach a target val loss: `compare.target_loss` when set, else
  `compare.target_ratio` (1.1) x the best final val loss of all optimizers, i.e. "within 10%
  of the best any optimizer got". Seconds are training wall time, including the per-epoch
  evaluation of the train and val loss, summed up to that epoch;
- the fit verdict of the final model.

Outputs: reports/compare.md (the table), reports/compare.csv (the kept runs' curves in long
format: optimizer, lr, epoch, seconds, train_loss, val_loss; a DVC plot) and
reports/compare.png (val loss against epoch and against wall time).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.contracts import COMPARE_CHART_PATH, COMPARE_CURVES_PATH, COMPARE_REPORT_PATH
from stages.core.io import save_png, write_text
from stages.core.params import LOSS_LABEL, CompareParams, TrainParams
from stages.tools.sweep import markdown_table, rank_value

CURVE_COLUMNS = ("optimizer", "lr", "epoch", "seconds", "train_loss", "val_loss")


@dataclass
class Comparison:
    rows: list[dict[str, Any]]  # the table, best final val loss first
    kept: dict[str, dict[str, Any]]  # optimizer -> its best trial (or its failure)
    target: float | None
    target_how: str
    loss: str  # mse | log_loss
    notes: list[str]  # e.g. a best learning rate at the edge of its grid


def compare_plan(base: TrainParams, cp: CompareParams) -> list[dict[str, Any]]:
    """The trials: every optimizer at each of its learning rates, same epochs, no early stopping."""
    epochs = cp.epochs or base.epochs
    return [
        {"optimizer": opt, "lr": lr, "epochs": epochs, "early_stopping.patience": None,
         # decoupled decay is adamw's defining feature; the others must have none
         "weight_decay": cp.weight_decay if opt == "adamw" else 0.0}
        for opt in cp.optimizers for lr in cp.lrs_for(opt)
    ]


def best_per_optimizer(trials: Sequence[dict[str, Any]], optimizers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each optimizer's trial with the lowest final val loss (its first failure if all failed)."""
    kept = {}
    for opt in optimizers:
        mine = [t for t in trials if t["params"]["optimizer"] == opt]
        if mine:
            kept[opt] = min(mine, key=lambda t: (rank_value(t), t.get("seconds") or 0.0))
    return kept


def target_value(kept: dict[str, dict[str, Any]], cp: CompareParams) -> tuple[float | None, str]:
    """The target val loss and how it was chosen."""
    if cp.target_loss is not None:
        return cp.target_loss, "compare.target_loss"
    finals = [rank_value(t) for t in kept.values() if t["status"] == "ok"]
    if not finals:
        return None, "no optimizer finished"
    return cp.target_ratio * min(finals), f"{cp.target_ratio:g} x the best final val loss"


def reach(history: Sequence[dict[str, Any]], target: float | None) -> tuple[int | None, float | None]:
    """The first epoch whose val loss is at or below `target`, and the training seconds up to it."""
    if target is None:
        return None, None
    for rec in history:
        if rec["val_loss"] <= target:
            return rec["epoch"], rec["seconds"]
    return None, None


def compare(trials: Sequence[dict[str, Any]], cp: CompareParams) -> Comparison:
    """The comparison table from the trials of `compare_plan`."""
    kept = best_per_optimizer(trials, cp.optimizers)
    target, how = target_value(kept, cp)
    loss = next((t["loss"] for t in trials), "mse")
    rows, notes = [], []
    for opt, t in kept.items():
        tried = [x for x in trials if x["params"]["optimizer"] == opt]
        edge = grid_edge(t, tried)
        if edge:
            notes.append(f"{opt}: the best lr ({t['params']['lr']:g}) is the {edge} tried; the optimum may lie "
                         f"beyond it (widen sweep.compare.lrs.{opt})")
        failed = sum(x["status"] != "ok" for x in tried)
        row: dict[str, Any] = {"optimizer": opt, "lr": t["params"]["lr"] if t["status"] == "ok" else None}
        if t["status"] == "ok":
            epochs, seconds = reach(t["history"], target)
            row.update({f"final_val_{loss}": rank_value(t),
                        f"best_val_{loss}": min(r["val_loss"] for r in t["history"]),
                        "epochs_to_target": epochs, "seconds_to_target": seconds,
                        "epochs": t["epochs"], "seconds": t["seconds"], "verdict": t["verdict"]})
        else:
            row.update({f"final_val_{loss}": None, f"best_val_{loss}": None, "epochs_to_target": None,
                        "seconds_to_target": None, "epochs": None, "seconds": None, "verdict": "failed"})
        row["lrs_tried"] = " ".join(f"{x['params']['lr']:g}" for x in tried) + (f" ({failed} failed)" if failed else "")
        rows.append(row)
    rows.sort(key=lambda r: (r[f"final_val_{loss}"] is None, r[f"final_val_{loss}"] or 0.0))
    return Comparison(rows, kept, target, how, loss, notes)


def grid_edge(best: dict[str, Any], tried: Sequence[dict[str, Any]]) -> str | None:
    """"largest" or "smallest" when the kept lr sits at that end of the lrs that trained."""
    lrs = sorted({x["params"]["lr"] for x in tried if x["status"] == "ok"})
    if best["status"] != "ok" or len(lrs) < 2:
        return None
    larger_failed = any(x["status"] != "ok" and x["params"]["lr"] > lrs[-1] for x in tried)
    if best["params"]["lr"] == lrs[-1] and not larger_failed:  # a larger lr that diverged bounds it
        return "largest"
    return "smallest" if best["params"]["lr"] == lrs[0] else None


# ---------------------------------------------------------------------------------- files


def curves_csv(c: Comparison) -> str:
    """Long format, one row per (optimizer, epoch) of the kept runs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    for opt, t in c.kept.items():
        for rec in t.get("history") or []:
            writer.writerow([opt, repr(t["params"]["lr"]), rec["epoch"], repr(rec["seconds"]),
                             repr(rec["train_loss"]), repr(rec["val_loss"])])
    return buf.getvalue()


def report_markdown(c: Comparison, *, task: str, n_train: int | None = None,
                    noise_floor: float | None = None, workers: int | None = None) -> str:
    loss_name = LOSS_LABEL.get(c.loss, c.loss)
    lines = ["# Optimizer comparison", "",
             f"Task: {task}{f', {n_train} train rows' if n_train else ''}. Loss: val {loss_name} "
             "(lower is better), each optimizer at the best of its learning rates, early stopping off.", ""]
    if c.target is not None:
        lines.append(f"Target val {loss_name}: {c.target:.4g} ({c.target_how}).")
    if noise_floor is not None:
        lines.append(f"Noise floor (irreducible {loss_name}): {noise_floor:.4g}.")
    lines += ["", markdown_table(c.rows)]
    lines += [f"- {note}" for note in c.notes] + ([""] if c.notes else [])
    if workers and workers > 1:
        lines += [f"Seconds were measured with {workers} trials running at once, sharing this machine's cores: "
                  "compare them within one run, not across machines or loads.", ""]
    lines += ["Figures: compare.png (val loss vs epoch and vs seconds), curves in compare.csv.", ""]
    return "\n".join(lines)


def chart_png(c: Comparison, dest: str | Path) -> None:
    """Two panels: val loss against epoch and against training seconds, the target dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    by_epoch, by_time = fig.subplots(1, 2, sharey=True)
    positive, lowest = True, math.inf
    for opt, t in c.kept.items():
        history = t.get("history") or []
        if not history:
            continue
        val = [r["val_loss"] for r in history]
        positive, lowest = positive and min(val) > 0, min(lowest, min(val))
        label = f"{opt} (lr {t['params']['lr']:g})"
        line, = by_epoch.plot([r["epoch"] for r in history], val, label=label, linewidth=1.3)
        by_time.plot([r["seconds"] for r in history], val, label=label, color=line.get_color(), linewidth=1.3)
    loss_name = LOSS_LABEL.get(c.loss, c.loss)
    for ax, xlabel in ((by_epoch, "epoch"), (by_time, "training seconds")):
        if c.target is not None and math.isfinite(c.target):
            ax.axhline(c.target, color="grey", linestyle="--", linewidth=1, label=f"target {c.target:.4g}")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if positive:
            ax.set_yscale("log")
    if positive and c.target is not None and math.isfinite(lowest):
        # the race is near the target: the first epochs of a slow optimizer would squash it
        by_epoch.set_ylim(0.9 * min(lowest, c.target), 10 * c.target)
    by_epoch.set_ylabel(f"val {loss_name}")
    by_epoch.set_title(f"val {loss_name} per epoch")
    by_time.set_title(f"val {loss_name} against wall time")
    by_time.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    save_png(fig, dest)


def write_comparison(c: Comparison, markdown: str, root: str | Path = ".") -> list[Path]:
    """reports/compare.csv, compare.png and compare.md (the table last)."""
    root = Path(root)
    write_text(root / COMPARE_CURVES_PATH, curves_csv(c))
    chart_png(c, root / COMPARE_CHART_PATH)
    write_text(root / COMPARE_REPORT_PATH, markdown)
    return [root / COMPARE_CURVES_PATH, root / COMPARE_CHART_PATH, root / COMPARE_REPORT_PATH]
