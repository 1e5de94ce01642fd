"""Exact resume of a killed training run.

Checkpoints (every `checkpoint_every` epochs, atomic) hold everything the next epoch depends on:
weights, optimizer state, RNG state, early-stopping state and history, plus a fingerprint of the
params, data and code. A rerun after a kill resumes from a checkpoint with the same fingerprint
and ends, on CPU, with the same model bytes as an uninterrupted run; any other checkpoint is
ignored.
"""


from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.core.code import TRAINING_CODE, code_digest
from stages.core.contracts import CHECKPOINT_NAME, ModelConfig
from stages.core.io import atomic_path, write_text
from stages.core.params import TrainParams
from stages.data.splits import Split
from stages.training import distributed
from stages.training.early_stopping import EarlyStopping

log = logging.getLogger(__name__)


def run_fingerprint(p: TrainParams, splits: dict[str, Split], cfg: ModelConfig, device: torch.device) -> str:
    """Hash of everything a run's result depends on: params, data, code, device, torch version."""
    h = hashlib.sha256()
    head = {"params": p.model_dump(mode="json", exclude={"checkpoint_every"}), "config": cfg.to_dict(),
            "device": device.type, "torch": torch.__version__, "world": distributed.current().size}
    h.update(json.dumps(head, sort_keys=True).encode())
    for name in ("train", "val"):
        h.update(np.ascontiguousarray(splits[name].x))  # the buffer itself, not a bytes copy of the split
        h.update(np.ascontiguousarray(splits[name].y))
    h.update(code_digest(*TRAINING_CODE).encode())
    return h.hexdigest()


def clear_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete the run's checkpoint file. The folder stays, with a note in it: DVC declares it
    as an output and warns about an empty one."""
    path = Path(checkpoint_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CHECKPOINT_NAME).unlink(missing_ok=True)
    note = path / "README.txt"
    if not note.exists():
        write_text(note, f"{CHECKPOINT_NAME} here is the resume state of an unfinished `train` stage run;\n"
                         "it is deleted when the run finishes.\n")


@dataclass
class RunState:
    """What the next epoch depends on besides weights, optimizer and RNGs (checkpointed)."""

    early_stopping: EarlyStopping
    epoch: int = 0  # epochs completed
    elapsed: float = 0.0  # seconds spent in epochs, over all resumed attempts
    history: list[dict[str, Any]] = field(default_factory=list)

    def end_epoch(self, rec: dict[str, Any]) -> None:
        """Count in a finished epoch's history record."""
        self.epoch, self.elapsed = rec["epoch"], self.elapsed + rec["epoch_seconds"]
        self.history.append(rec)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "elapsed": self.elapsed, "history": self.history,
                **self.early_stopping.state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.epoch, self.elapsed, self.history = state["epoch"], state["elapsed"], state["history"]
        self.early_stopping.load_state_dict(state, device)


class Checkpointer:
    """Saves a run every `every` epochs to `path` and restores it on a rerun of the same run.

    `path` None turns checkpointing off. `fingerprint` (run_fingerprint) tells the same run
    apart from any other. In a distributed run every rank restores, only the `writes` one saves.
    """

    def __init__(self, path: Path | None, fingerprint: str | None, every: int, *, model: nn.Module,
                 optimizer: torch.optim.Optimizer, gens: dict[str, torch.Generator], device: torch.device,
                 writes: bool = True) -> None:
        self.path, self.fingerprint, self.every, self.writes = path, fingerprint, every, writes
        self.model, self.optimizer, self.gens, self.device = model, optimizer, gens, device

    def restore(self, state: RunState) -> bool:
        """Load this very run's checkpoint, if there is one, into model, optimizer, generators and `state`."""
        if self.path is None or not self.path.exists():
            return False
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint torn by a crash is not fatal: start fresh
            log.warning("ignoring unreadable checkpoint %s (%s); starting fresh", self.path, type(exc).__name__)
            return False
        if not isinstance(blob, dict) or blob.get("fingerprint") != self.fingerprint:
            log.info("checkpoint %s is from other params, data or code; starting fresh", self.path)
            return False
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        for name, gen in self.gens.items():
            gen.set_state(blob["rng"][name])
        state.load_state_dict(blob["run"], self.device)
        log.info("resuming from %s at epoch %d", self.path, state.epoch)
        return True

    def maybe_save(self, state: RunState, last: bool) -> None:
        """Save after every `every`-th epoch but the `last` one: a finished run has nothing to resume."""
        if self.path is None or not self.writes or state.epoch % self.every != 0 or last:
            return
        blob = {"fingerprint": self.fingerprint, "run": state.state_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": {k: g.get_state() for k, g in self.gens.items()}}
        with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
            torch.save(blob, f)
