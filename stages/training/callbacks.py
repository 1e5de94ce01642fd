"""What a training run does after each epoch besides training: a list of epoch callbacks.

Each callback is called with the epoch's history record (HISTORY_COLUMNS), after the epoch's
checkpoint is written, so one that raises stops a run that can resume from there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from stages.core.contracts import HISTORY_COLUMNS

EpochCallback = Callable[[dict[str, Any]], None]


class LiveLog:
    """Each epoch as one dvclive step (the epoch itself is the step)."""

    def __init__(self, live: Any) -> None:
        self.live = live

    def __call__(self, rec: dict[str, Any]) -> None:
        for key in HISTORY_COLUMNS[1:]:
            self.live.log_metric(key, rec[key])
        self.live.next_step()


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


def epoch_callbacks(live: Any, progress: bool, on_epoch_end: EpochCallback | None, epochs: int,
                    start: int, resumed: list[dict[str, Any]]) -> list[EpochCallback]:
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
    if progress:
        callbacks.append(ProgressBar(epochs, initial=start))
    if on_epoch_end is not None:
        callbacks.append(on_epoch_end)
    return callbacks


def close_callbacks(callbacks: list[EpochCallback]) -> None:
    """Close those callbacks that hold something open (the progress bar) at the end of a run."""
    for callback in callbacks:
        if isinstance(callback, ProgressBar):
            callback.close()
