"""The regression target's transform: which one a run uses (`resolve_target_transform`), and the
pair of functions the model applies (to the target it fits, and back on its predictions).

The model fits the transformed, standardised target and `forward` maps back, so predictions,
the losses in the history and every metric stay in the target's own units; only the optimiser
sees the transformed scale (a long right tail no longer dominates the squared error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from stages.core.errors import ParamsError
from stages.core.params import TargetTransformChoice, TargetTransformName, allowed

log = logging.getLogger(__name__)

# name -> (target -> what the network fits, prediction of the network -> target units)
TARGET_TRANSFORMS: dict[TargetTransformName, tuple[Callable[[torch.Tensor], torch.Tensor],
                                                   Callable[[torch.Tensor], torch.Tensor]]] = {
    "none": (lambda y: y, lambda z: z),
    "log1p": (torch.log1p, torch.expm1),
}

# Fisher-Pearson skewness above this is "highly skewed" by the usual rule of thumb (|g1| > 1);
# the default friedman target has 0.03, a log-normal price 2 and more
AUTO_SKEWNESS = 1.0


def skewness(y: np.ndarray) -> float:
    """Sample skewness g1 = m3 / m2^1.5 in float64 (0 for a constant target)."""
    y64 = np.asarray(y, dtype=np.float64)
    d = y64 - y64.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d * d * d)) / m2**1.5 if m2 > 0 else 0.0


def auto_transform(y: np.ndarray) -> TargetTransformName:
    """log1p when the train target is non-negative, right-skewed (skewness > AUTO_SKEWNESS) and
    log1p actually makes it less skewed; else none.

    Non-negative, not just > -1: log1p is a sensible skew fix for counts, prices and durations,
    which start at 0; for a target that goes negative its curvature near -1 would be arbitrary."""
    y64 = np.asarray(y, dtype=np.float64)
    if len(y64) == 0 or y64.min() < 0:
        return "none"
    before = skewness(y64)
    if before <= AUTO_SKEWNESS:
        return "none"
    return "log1p" if abs(skewness(np.log1p(y64))) < before else "none"


def resolve_target_transform(choice: TargetTransformChoice, task: str, y: np.ndarray | None) -> str | None:
    """The transform a run uses, as ModelConfig.target_transform stores it: "log1p", or None for
    none (a model without a transform keeps the config, and the file bytes, it always had).

    `y`: the train split's targets (None: auto decides none). An explicit log1p on a
    classification task or on targets <= -1 is a ParamsError."""
    if choice not in ("auto", *TARGET_TRANSFORMS):
        raise ValueError(f"train.target_transform: unknown target_transform {choice!r} "
                         f"(allowed: {allowed(TargetTransformChoice)})")
    if task != "regression":
        if choice == "log1p":
            raise ParamsError(f"train.target_transform: 'log1p' applies to regression targets "
                              f"(the task is {task}); use auto or none")
        return None
    if choice == "auto":
        name = auto_transform(y) if y is not None else "none"
        if name != "none":
            log.info("train.target_transform auto: %s (train targets >= 0, skewness %.2f)", name, skewness(y))
        return None if name == "none" else name
    if choice == "log1p" and y is not None and len(y) and float(np.min(y)) <= -1:
        raise ParamsError(f"train.target_transform: 'log1p' needs train targets above -1 "
                          f"(the smallest is {float(np.min(y)):g}); use none")
    return None if choice == "none" else choice


def check_transform(name: str | None) -> TargetTransformName:
    """A config's transform (None = none); an unknown name is a ValueError naming it."""
    name = name or "none"
    if name not in TARGET_TRANSFORMS:
        raise ValueError(f"model: unknown target_transform {name!r} (allowed: {allowed(TargetTransformName)})")
    return name  # type: ignore[return-value]
