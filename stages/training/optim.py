"""Factories for the training objective: loss, penalty (regularizer), optimizer, lr schedule.

Each option is a dict keyed by the names its Literal in stages/core/params.py declares (a test
compares the keys). Params validation already rejects unknown names; the factories still raise
ValueError naming a bad value, for callers that build params some other way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import torch
import torch.nn.functional as F

from stages.core.errors import ParamsError
from stages.core.params import (
    LossChoice,
    LossName,
    OptimizerName,
    Regularizer,
    Schedule,
    TaskName,
    TrainParams,
    allowed,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[Sequence[torch.Tensor]], torch.Tensor]
OptimizerFactory = Callable[[TrainParams, list[torch.nn.Parameter]], torch.optim.Optimizer]

# name -> (huber_delta -> mean loss over a batch: (prediction or logits, target) -> scalar)
LOSSES: dict[LossName, Callable[[float], LossFn]] = {
    "mse": lambda delta: F.mse_loss,
    "huber": lambda delta: partial(F.huber_loss, delta=delta),
    "cross_entropy": lambda delta: F.cross_entropy,
}
# the losses that fit each task; the first is what `auto` picks
TASK_LOSSES: dict[TaskName, tuple[LossName, ...]] = {
    "regression": ("mse", "huber"),
    "classification": ("cross_entropy",),
}


def _unknown(key: str, value: object, option: object) -> ValueError:
    """train.KEY names an unknown value: the message lists the option's Literal."""
    return ValueError(f"train.{key}: unknown {key} {value!r} (allowed: {allowed(option)})")


def resolve_loss(loss: str, task: str) -> str:
    """`auto` -> mse (regression) or cross_entropy (classification); a mismatch is a ParamsError."""
    if loss != "auto" and loss not in LOSSES:
        raise _unknown("loss", loss, LossChoice)
    if task not in TASK_LOSSES:
        raise ValueError(f"task: unknown task {task!r} (allowed: {allowed(TaskName)})")
    fits = TASK_LOSSES[task]  # type: ignore[index]
    if loss == "auto":
        return fits[0]
    if loss not in fits:
        use = ", ".join(("auto",) + fits[:-1]) + " or " + fits[-1]
        raise ParamsError(f"train.loss: {loss!r} does not fit a {task} task (use {use})")
    return loss


def make_loss(name: str, huber_delta: float = 1.0) -> LossFn:
    """Mean loss over a batch: (prediction or logits, target) -> scalar."""
    if name not in LOSSES:
        raise _unknown("loss", name, LossName)
    return LOSSES[name](huber_delta)  # type: ignore[index]


def make_penalty(p: TrainParams) -> Penalty | None:
    """Explicit penalty on the weight tensors, scaled by reg_strength; None when there is none.

    l1 = λ·Σ|w|, l2 = λ·Σw², elastic_net = λ·(ρ·Σ|w| + (1-ρ)·Σw²) with ρ = l1_ratio.
    """
    coef = _penalty_coefficients(p)
    if coef is None:
        return None
    a, b = coef
    return lambda ws: sum(a * w.abs().sum() + b * w.square().sum() for w in ws)


def make_penalty_grad(p: TrainParams) -> Callable[[Sequence[torch.Tensor]], None] | None:
    """Adds the gradient of `make_penalty(p)` to each weight's .grad, in place.

    The same gradient autograd would give for the penalty term (d|w| = sign(w), dw² = 2w),
    without building its graph every step: the training loop calls this after backward().
    """
    coef = _penalty_coefficients(p)
    if coef is None:
        return None
    a, b = coef

    @torch.no_grad()
    def add_grad(ws: Sequence[torch.Tensor]) -> None:
        for w in ws:
            if a:
                w.grad.add_(torch.sign(w), alpha=a)
            if b:
                w.grad.add_(w, alpha=2 * b)

    return add_grad


# name -> (reg_strength λ, l1_ratio ρ) -> (L1 coefficient, L2 coefficient); None = no penalty
PENALTIES: dict[Regularizer, Callable[[float, float], tuple[float, float] | None]] = {
    "none": lambda lam, rho: None,
    "l1": lambda lam, rho: (lam, 0.0),
    "l2": lambda lam, rho: (0.0, lam),
    "elastic_net": lambda lam, rho: (lam * rho, lam * (1 - rho)),
}


def _penalty_coefficients(p: TrainParams) -> tuple[float, float] | None:
    """(L1 coefficient, L2 coefficient) of the penalty, or None when there is none."""
    if p.regularizer not in PENALTIES:
        raise _unknown("regularizer", p.regularizer, Regularizer)
    if p.reg_strength == 0:
        return None
    return PENALTIES[p.regularizer](p.reg_strength, p.l1_ratio)


# torch's fused kernels (one kernel per step instead of several ops per tensor) where torch has
# them, on CPU and CUDA alike; rmsprop has none and uses the multi-tensor (foreach) path.
# gd and sgd are both plain SGD: gd differs only in its batch (the whole train split).
OPTIMIZERS: dict[OptimizerName, OptimizerFactory] = {
    "gd": lambda p, ws: torch.optim.SGD(ws, lr=p.lr, fused=True),
    "sgd": lambda p, ws: torch.optim.SGD(ws, lr=p.lr, fused=True),
    "momentum": lambda p, ws: torch.optim.SGD(ws, lr=p.lr, momentum=p.momentum, fused=True),
    "nesterov": lambda p, ws: torch.optim.SGD(ws, lr=p.lr, momentum=p.momentum, nesterov=True, fused=True),
    "adagrad": lambda p, ws: torch.optim.Adagrad(ws, lr=p.lr, fused=True),
    "rmsprop": lambda p, ws: torch.optim.RMSprop(ws, lr=p.lr, momentum=p.momentum, foreach=True),
    "adam": lambda p, ws: torch.optim.Adam(ws, lr=p.lr, betas=tuple(p.betas), fused=True),
    "adamw": lambda p, ws: torch.optim.AdamW(
        ws, lr=p.lr, betas=tuple(p.betas), weight_decay=p.weight_decay, fused=True
    ),
}


def make_optimizer(p: TrainParams, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by train.optimizer, configured from `p`."""
    if p.optimizer not in OPTIMIZERS:
        raise _unknown("optimizer", p.optimizer, OptimizerName)
    return OPTIMIZERS[p.optimizer](p, list(parameters))


# name -> (p, s) -> learning rate, s = epochs since the warmup ended (see lr_at)
SCHEDULES: dict[Schedule, Callable[[TrainParams, int], float]] = {
    "constant": lambda p, s: p.lr,
    "exponential": lambda p, s: p.lr * p.gamma**s,
    "step": lambda p, s: p.lr * p.gamma ** (s // p.step_size),
    "cosine": lambda p, s: p.lr * 0.5 * (1 + math.cos(math.pi * s / max(1, p.epochs - p.warmup_epochs))),
}


def lr_at(p: TrainParams, epoch: int) -> float:
    """Learning rate for the epoch with 0-based index `epoch` (the schedule steps once per epoch).

    Warmup: the first W = warmup_epochs epochs ramp linearly, lr·(epoch+1)/(W+1).
    After it, with s = epoch - W epochs since warmup and S = epochs - W:
      constant    lr
      exponential lr·gamma^s
      step        lr·gamma^floor(s / step_size)
      cosine      lr·½·(1 + cos(π·s/S))   (from lr towards 0 at the last epoch)
    """
    if p.schedule not in SCHEDULES:
        raise _unknown("schedule", p.schedule, Schedule)
    warm = p.warmup_epochs
    if epoch < warm:
        return p.lr * (epoch + 1) / (warm + 1)
    return SCHEDULES[p.schedule](p, epoch - warm)
