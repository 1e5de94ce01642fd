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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.core.code import TRAINING_CODE, code_digest
from stages.core.contracts import CHECKPOINT_NAME
from stages.core.io import atomic_path, write_text
from stages.core.params import TrainParams
from stages.data.splits import Split
from stages.training import distributed

log = logging.getLogger(__name__)




def run_fingerprint(p: TrainParams, splits: dict[str, Split], cfg: dict[str, Any], device: torch.device) -> str:
    """Hash of everything a run's result depends on: params, data, code, device, torch version."""
    h = hashlib.sha256()
    head = {"params": p.model_dump(mode="json", exclude={"checkpoint_every"}), "config": cfg,
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

    epoch: int = 0  # epochs completed
    elapsed: float = 0.0  # seconds spent in epochs, over all resumed attempts
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the val loss last improved by more than min_delta
    best_state: dict[str, torch.Tensor] | None = None


def save_checkpoint(path: Path, fingerprint: str, run: RunState, model: nn.Module,
                     optimizer: torch.optim.Optimizer, gens: dict[str, torch.Generator]) -> None:
    blob = {"fingerprint": fingerprint, "run": vars(run), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": {k: g.get_state() for k, g in gens.items()}}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(blob, f)


def restore_checkpoint(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                        gens: dict[str, torch.Generator], device: torch.device) -> RunState | None:
    """Load a checkpoint of this very run into model, optimizer and generators; None if there is none."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a checkpoint torn by a crash is not fatal: start fresh
        log.warning("ignoring unreadable checkpoint %s (%s); starting fresh", path, type(exc).__name__)
        return None
    if not isinstance(blob, dict) or blob.get("fingerprint") != fingerprint:
        log.info("checkpoint %s is from other params, data or code; starting fresh", path)
        return None
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    for name, gen in gens.items():
        gen.set_state(blob["rng"][name])
    run = RunState(**blob["run"])
    if run.best_state is not None:
        run.best_state = {k: v.to(device) for k, v in run.best_state.items()}
    log.info("resuming from %s at epoch %d", path, run.epoch)
    return run
