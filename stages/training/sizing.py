"""`auto` training params chosen from the number of train rows.

The fixed defaults (batch 256, lr 0.003, L2 0.001) were tuned on 14,000 synthetic train rows. On
a table of a few hundred rows they give two optimizer steps per epoch, stop early on a val split
of a few dozen rows before the network has learned much, and leave the penalty weaker than the
data warrants. `auto` keeps those values from 2,560 (batch) and 10,000 (penalty) train rows up,
so large runs are unchanged, and below that:

- batch_size: train rows / 10, rounded down to a power of two, 32 at least: ten or more steps
  per epoch;
- lr: 0.003 x sqrt(batch / 256), the square-root rule for a smaller (noisier) batch;
- reg_strength: 0.001 x 10,000 / train rows: the penalty is added to the mean loss, so a fixed
  prior on the weights means a strength that grows as the rows shrink (at least 0.001).

Measured on small public tables (README, "Small tables"): these bring the defaults level with a
standardised ridge / logistic regression where the fixed values trailed by 1 to 9 points.
"""

from __future__ import annotations

import logging
import math

from stages.core.params import AUTO, TrainParams

log = logging.getLogger(__name__)

LARGE_BATCH = 256
BASE_LR = 0.003
BASE_REG = 0.001
REG_ROWS = 10_000  # from this many train rows up, reg_strength auto is BASE_REG
MIN_BATCH = 32
STEPS_PER_EPOCH = 10
AUTO_KEYS = ("batch_size", "lr", "reg_strength")


def auto_batch_size(n_train: int) -> int:
    if n_train >= LARGE_BATCH * STEPS_PER_EPOCH:
        return LARGE_BATCH
    return max(MIN_BATCH, 2 ** math.floor(math.log2(max(1, n_train) / STEPS_PER_EPOCH)))


def auto_lr(batch_size: int) -> float:
    return BASE_LR * math.sqrt(min(batch_size, LARGE_BATCH) / LARGE_BATCH)


def auto_reg_strength(n_train: int) -> float:
    return BASE_REG * max(1.0, REG_ROWS / max(1, n_train))


def sized_for(p: TrainParams, n_train: int) -> TrainParams:
    """`p` with every `auto` value of batch_size, lr and reg_strength replaced for `n_train` rows."""
    batch = auto_batch_size(n_train) if p.batch_size == AUTO else p.batch_size
    chosen = {
        "batch_size": batch,
        "lr": auto_lr(batch) if p.lr == AUTO else p.lr,
        "reg_strength": auto_reg_strength(n_train) if p.reg_strength == AUTO else p.reg_strength,
    }
    changed = {k: v for k, v in chosen.items() if getattr(p, k) == AUTO}
    if not changed:
        return p
    large = {"batch_size": LARGE_BATCH, "lr": BASE_LR, "reg_strength": BASE_REG}
    if any(v != large[k] for k, v in changed.items()):
        log.info("%d train rows: %s (train.* auto)", n_train, ", ".join(f"{k} {v:.3g}" for k, v in changed.items()))
    return p.model_copy(update=changed)


def auto_values(p: TrainParams, sized: TrainParams) -> dict[str, float]:
    """What `auto` in `p` stood for in `sized` (for metrics/train.json); empty when nothing was auto."""
    return {k: getattr(sized, k) for k in AUTO_KEYS if getattr(p, k) == AUTO}
