"""What a training run does after each epoch besides training: a list of epoch callbacks.

Each callback is called with the epoch's history record (HISTORY_COLUMNS), after the epoch's
checkpoint is written, so one that raises stops a run that can resume from there.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

from stages.core.contracts import HISTORY_COLUMNS

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]
Progress = Literal["bar", "log"] | None  # a tqdm bar (a terminal), log lines (CI, Prefect, files), nothing


class LiveLog:
    """Each epoch as one dvclive step (the epoch itself is the step).

    log_metric appends the epoch's row to each plot file at once; dvclive's next_step (its
    metrics.json, and a re-read of every plot file for Studio even when Studio is off) runs
    every `every_seconds` only: per epoch it cost a small table's run about as much as the
    training itself. In between the step advances as next_step would advance it, and the
    summary's step is kept current: Live.end() takes the step from it and writes the last
    epoch's summary, so the files at the end are the same."""

    def __init__(self, live: Any, every_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.live, self.every_seconds, self.clock = live, every_seconds, clock
        self.last_sync = clock()

    def __call__(self, rec: dict[str, Any]) -> None:
        live = self.live
        for key in HISTORY_COLUMNS[1:]:
            live.log_metric(key, rec[key])
        now = self.clock()
        if now - self.last_sync >= self.every_seconds:
            live.next_step()
            self.last_sync = now
        else:
            live.summary["step"] = live.step
            live.step += 1


class ProgressBar:
    """A tqdm bar of epochs on stderr, showing the latest train and val losses."""

    def __init__(self, total: int, initial: int) -> None:
        from tqdm import tqdm  # imported when asked for: training itself needs no tqdm

        self.bar = tqdm(total=total, initial=initial, desc="train", unit="epoch", file=sys.stderr, leave=False)

    def __call__(self, rec: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(train=f"{rec['train_loss']:.4g}", val=f"{rec['val_loss']:.4g}")

    def close(self) -> None:
        self.bar.close()


class ProgressLog:
    """Off a terminal: one log line every `every_fraction` of the epochs or `every_seconds`,
    whichever comes first, with the losses, samples/s and the time left at that pace."""

    def __init__(self, total: int, initial: int, rows: int, every_fraction: float = 0.1,
                 every_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.rows, self.clock = total, rows, clock
        self.step = max(1, round(every_fraction * total))
        self.every_seconds = every_seconds
        self.last_epoch, self.last_time = initial, clock()

    def __call__(self, rec: dict[str, Any]) -> None:
        epoch, now = rec["epoch"], self.clock()
        if epoch - self.last_epoch < self.step and now - self.last_time < self.every_seconds and epoch < self.total:
            return
        per_epoch = (now - self.last_time) / max(epoch - self.last_epoch, 1)
        log.info("epoch %d/%d: train loss %.4g, val loss %.4g, %.0f samples/s, at most %s left",
                 epoch, self.total, rec["train_loss"], rec["val_loss"], self.rows / max(per_epoch, 1e-9),
                 _duration(per_epoch * (self.total - epoch)))
        self.last_epoch, self.last_time = epoch, now


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def epoch_callbacks(live: Any, progress: Progress, on_epoch_end: EpochCallback | None, epochs: int,
                    start: int, resumed: list[dict[str, Any]], rows: int = 0) -> list[EpochCallback]:
    """dvclive logging, the progress bar and `on_epoch_end`, those asked for, in that order.

    A run resumed at epoch `start` replays the `resumed` epochs' records to dvclive (DVC clears
    dvclive/ before a rerun) and starts its bar at `start`.
    """
    callbacks: list[EpochCallback] = []
    if live is not None:
        log_live = LiveLog(live)
        for rec in resumed:
            log_live(rec)
        callbacks.append(log_live)
    if progress == "bar":
        callbacks.append(ProgressBar(epochs, initial=start))
    elif progress == "log":
        callbacks.append(ProgressLog(epochs, initial=start, rows=rows))
    if on_epoch_end is not None:
        callbacks.append(on_epoch_end)
    return callbacks


def close_callbacks(callbacks: list[EpochCallback]) -> None:
    """Close those callbacks that hold something open (the progress bar) at the end of a run."""
    for callback in callbacks:
        if isinstance(callback, ProgressBar):
            callback.close()
