"""Factories for the training objective: loss, penalty (regularizer), optimizer, lr schedule.

Params validation (stages/params.py) already rejects unknown names; the factories still raise
ValueError naming a bad value, for callers that build params some other way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from stages.core.errors import ParamsError
from stages.core.params import TrainParams

LOSSES = ("mse", "huber", "cross_entropy")
REGRESSION_LOSSES = ("mse", "huber")
REGULARIZERS = ("none", "l1", "l2", "elastic_net")
SCHEDULES = ("constant", "exponential", "step", "cosine")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def resolve_loss(loss: str, task: str) -> str:
    """`auto` -> mse (regression) or cross_entropy (classification); a mismatch is a ParamsError."""
    if loss == "auto":
        return "mse" if task == "regression" else "cross_entropy"
    if loss not in LOSSES:
        raise ValueError(f"train.loss: unknown loss {loss!r} (allowed: auto, {', '.join(LOSSES)})")
    if task == "regression" and loss not in REGRESSION_LOSSES:
        raise ParamsError(f"train.loss: {loss!r} does not fit a regression task (use auto, mse or huber)")
    if task == "classification" and loss != "cross_entropy":
        raise ParamsError(f"train.loss: {loss!r} does not fit a classification task (use auto or cross_entropy)")
    return loss


def make_loss(name: str, huber_delta: float = 1.0) -> LossFn:
    """Mean loss over a batch: (prediction or logits, target) -> scalar."""
    if name == "mse":
        return F.mse_loss
    if name == "huber":
        return lambda pred, target: F.huber_loss(pred, target, delta=huber_delta)
    if name == "cross_entropy":
        return F.cross_entropy
    raise ValueError(f"train.loss: unknown loss {name!r} (allowed: {', '.join(LOSSES)})")


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


def _penalty_coefficients(p: TrainParams) -> tuple[float, float] | None:
    """(L1 coefficient, L2 coefficient) of the penalty, or None when there is none."""
    if p.regularizer not in REGULARIZERS:
        raise ValueError(f"train.regularizer: unknown regularizer {p.regularizer!r} (allowed: {', '.join(REGULARIZERS)})")
    lam = p.reg_strength
    if p.regularizer == "none" or lam == 0:
        return None
    return {"l1": (lam, 0.0), "l2": (0.0, lam),
            "elastic_net": (lam * p.l1_ratio, lam * (1 - p.l1_ratio))}[p.regularizer]


def make_optimizer(p: TrainParams, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by train.optimizer (gd and sgd are both plain SGD; gd is full-batch).

    torch's fused kernels (one kernel per step instead of several ops per tensor) where torch
    has them, on CPU and CUDA alike; rmsprop has none and uses the multi-tensor path.
    """
    params = list(parameters)
    name, lr = p.optimizer, p.lr
    fast = {"fused": True}
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=lr, **fast)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=p.momentum, **fast)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=p.momentum, nesterov=True, **fast)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, **fast)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=p.momentum, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(p.betas), **fast)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(p.betas), weight_decay=p.weight_decay, **fast)
    raise ValueError(
        f"train.optimizer: unknown optimizer {name!r} "
        "(allowed: gd, sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw)"
    )


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
        raise ValueError(f"train.schedule: unknown schedule {p.schedule!r} (allowed: {', '.join(SCHEDULES)})")
    warm = p.warmup_epochs
    if epoch < warm:
        return p.lr * (epoch + 1) / (warm + 1)
    s = epoch - warm
    if p.schedule == "constant":
        return p.lr
    if p.schedule == "exponential":
        return p.lr * p.gamma**s
    if p.schedule == "step":
        return p.lr * p.gamma ** (s // p.step_size)
    return p.lr * 0.5 * (1 + math.cos(math.pi * s / max(1, p.epochs - warm)))
