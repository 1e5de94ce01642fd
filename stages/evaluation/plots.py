"""PNG figures for people: learning curves, predicted vs actual, confusion matrix.

Uses matplotlib's object API (Figure + Agg), never pyplot: no global figure state, so it is
safe in threads and needs no display. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from stages.core.io import save_png


def learning_curves_png(history: list[dict[str, Any]], dest: str | Path, loss_name: str = "loss",
                        title: str = "", noise_floor: float | None = None) -> None:
    """Train and val loss per epoch (log scale when positive), the best val epoch marked, and the
    noise floor (the irreducible loss, known for synthetic data) that no model can go below."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if history:
        epochs = [r["epoch"] for r in history]
        train = np.array([r["train_loss"] for r in history], dtype=float)
        val = np.array([r["val_loss"] for r in history], dtype=float)
        ax.plot(epochs, train, label="train")
        ax.plot(epochs, val, label="val")
        best = int(np.argmin(val))
        ax.axvline(epochs[best], color="grey", linestyle="--", linewidth=1,
                   label=f"best val (epoch {epochs[best]})")
        if noise_floor is not None:
            ax.axhline(noise_floor, color="black", linestyle=":", linewidth=1.2,
                       label=f"noise floor ({noise_floor:.4g}): the best any model can do")
        if (train > 0).all() and (val > 0).all() and (noise_floor is None or noise_floor > 0):
            _readable_log_axis(ax)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_name)
    ax.set_title(title or "learning curves")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_png(fig, dest)


def _readable_log_axis(ax: Any) -> None:
    """Log scale with plain-number tick labels (0.5, 1, 2, 5 rather than 10^-0.3 or none at all
    when the data spans less than a decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(1.5, 3.0, 7.0)))
    label = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(label)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}" if _few_decades(ax) else ""))


def _few_decades(ax: Any) -> bool:
    lo, hi = ax.get_ylim()
    return lo > 0 and hi / lo < 30


def pred_vs_actual_png(actual: np.ndarray, predicted: np.ndarray, dest: str | Path, title: str = "") -> None:
    """Scatter of predictions against targets, with the y = x line a perfect model would sit on."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    ax.scatter(actual, predicted, s=6, alpha=0.4, edgecolors="none")
    lo = float(min(np.min(actual), np.min(predicted)))
    hi = float(max(np.max(actual), np.max(predicted)))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="y = x")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(title or "test: predicted vs actual")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_png(fig, dest)


def confusion_matrix_png(cm: list[list[int]], labels: list[str], dest: str | Path, title: str = "") -> None:
    """Counts as a heat map (rows actual, columns predicted), each cell annotated."""
    counts = np.asarray(cm, dtype=float)
    k = counts.shape[0]
    size = min(12.0, 3.0 + 0.6 * k)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    im = ax.imshow(counts, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= 30:  # beyond that the numbers would not be legible
        top = counts.max() if counts.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > top / 2 else "black")
        ax.set_xticks(range(k), labels, rotation=45 if k > 6 else 0)
        ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title or "test: confusion matrix")
    fig.tight_layout()
    save_png(fig, dest)
