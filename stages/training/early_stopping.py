"""Early stopping on the val loss, as its own small object (as scikit-learn's SGD does).

Its whole state is checkpointed (`state_dict` / `load_state_dict`): a resumed run stops at the
same epoch and restores the same best weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class EarlyStopping:
    """Stop once the val loss has not improved by more than `min_delta` for `patience` epochs.

    patience None never stops, and keeps the last weights; the best epoch is still tracked (it
    is reported). Otherwise the best epoch's weights are kept, to be put back by `restore_best`.
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0  # epochs since the val loss last improved by more than min_delta
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_loss: float, model: nn.Module) -> bool:
        """Take epoch `epoch` (1-based) with its val loss; True when training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            if self.patience is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore_best(self, model: nn.Module) -> bool:
        """Load the best epoch's weights into `model`; False when none were kept (patience None)."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Take a `state_dict()` back, the kept weights moved to the model's `device`."""
        self.best_loss, self.best_epoch, self.bad_epochs = state["best_loss"], state["best_epoch"], state["bad_epochs"]
        best = state["best_state"]
        self.best_state = None if best is None else {k: v.to(device) for k, v in best.items()}
