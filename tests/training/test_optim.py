"""Loss, penalty, optimizer and schedule factories, checked against their formulas."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

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
    parse_params,
)
from stages.training.optim import (
    LOSSES,
    OPTIMIZERS,
    PENALTIES,
    SCHEDULES,
    TASK_LOSSES,
    lr_at,
    make_loss,
    make_optimizer,
    make_penalty,
    make_penalty_grad,
    resolve_loss,
)
from stages.training.sizing import sized_for

# ------------------------------------------------------------------ one name, one dispatch


def sized(**kw) -> TrainParams:
    """Params as the optimizer factories get them: `auto` values chosen (for a large table)."""
    return sized_for(TrainParams(**kw), 20_000)


@pytest.mark.parametrize(
    ("table", "option"),
    [(LOSSES, LossName), (PENALTIES, Regularizer), (OPTIMIZERS, OptimizerName), (SCHEDULES, Schedule),
     (TASK_LOSSES, TaskName)],
    ids=["losses", "penalties", "optimizers", "schedules", "task_losses"],
)
def test_dispatch_dicts_are_keyed_by_the_declared_literal(table, option) -> None:
    """A name added to the Literal (params accept it) without a factory, or the reverse, fails here."""
    assert tuple(table) == get_args(option)


def test_every_loss_fits_a_task() -> None:
    assert sorted(n for fits in TASK_LOSSES.values() for n in fits) == sorted(get_args(LossName))
    assert get_args(LossChoice) == ("auto", *get_args(LossName))

# ------------------------------------------------------------------------------ schedules


def expected_lr(schedule: str, e: int, lr: float, gamma: float, step: int, warm: int, epochs: int) -> float:
    """The documented formulas, written out independently of optim.lr_at."""
    if e < warm:
        return lr * (e + 1) / (warm + 1)
    s = e - warm
    return {
        "constant": lr,
        "exponential": lr * gamma**s,
        "step": lr * gamma ** (s // step),
        "cosine": lr * (1 + math.cos(math.pi * s / (epochs - warm))) / 2,
    }[schedule]


@pytest.mark.parametrize("schedule", get_args(Schedule))
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_at_matches_formula(schedule: str, warmup: int) -> None:
    p = sized(schedule=schedule, lr=0.1, gamma=0.5, step_size=4, warmup_epochs=warmup, epochs=20)
    got = [lr_at(p, e) for e in range(p.epochs)]
    want = [expected_lr(schedule, e, 0.1, 0.5, 4, warmup, 20) for e in range(20)]
    assert got == pytest.approx(want, rel=1e-12)


def test_schedule_shapes() -> None:
    step = sized(schedule="step", lr=1.0, gamma=0.1, step_size=10, epochs=30)
    assert [lr_at(step, e) for e in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = sized(schedule="cosine", lr=1.0, epochs=10)
    lrs = [lr_at(cos, e) for e in range(10)]
    assert lrs[0] == 1.0 and all(a > b for a, b in zip(lrs, lrs[1:])) and 0 < lrs[-1] < 0.03
    warm = sized(schedule="constant", lr=1.0, warmup_epochs=3, epochs=10)
    assert [lr_at(warm, e) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


# ------------------------------------------------------------------------------- penalties


def test_penalties_match_formulas() -> None:
    ws = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0], [-0.5]])]
    l1, l2 = 1 + 2 + 3 + 0.5, 1 + 4 + 9 + 0.25
    assert make_penalty(sized(regularizer="l1", reg_strength=0.1))(ws).item() == pytest.approx(0.1 * l1)
    assert make_penalty(sized(regularizer="l2", reg_strength=0.1))(ws).item() == pytest.approx(0.1 * l2)
    en = make_penalty(sized(regularizer="elastic_net", reg_strength=0.1, l1_ratio=0.3))
    assert en(ws).item() == pytest.approx(0.1 * (0.3 * l1 + 0.7 * l2))
    assert make_penalty(sized(regularizer="none")) is None
    assert make_penalty(sized(regularizer="l2", reg_strength=0.0)) is None
    assert make_penalty_grad(sized(regularizer="none")) is None


@pytest.mark.parametrize("reg", ["l1", "l2", "elastic_net"])
def test_penalty_grad_equals_autograd_of_penalty(reg: str) -> None:
    """The training loop adds the penalty's gradient directly: it must be autograd's gradient."""
    p = sized(regularizer=reg, reg_strength=0.03, l1_ratio=0.25)
    torch.manual_seed(0)
    ws = [torch.randn(4, 3, requires_grad=True), torch.randn(1, 4, requires_grad=True)]
    make_penalty(p)(ws).backward()
    want = [w.grad.clone() for w in ws]
    for w in ws:
        w.grad = torch.zeros_like(w)
    make_penalty_grad(p)(ws)
    for got, exp in zip([w.grad for w in ws], want):
        torch.testing.assert_close(got, exp)


# ------------------------------------------------------------------------------ optimizers


def test_optimizers_are_configured_from_params() -> None:
    w = [torch.nn.Parameter(torch.zeros(2, 2))]
    sgd = make_optimizer(sized(optimizer="sgd", lr=0.2), w)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0 and sgd.defaults["lr"] == 0.2
    assert sgd.defaults["fused"]  # one fused kernel per step
    gd = make_optimizer(sized(optimizer="gd"), w)
    assert type(gd) is torch.optim.SGD and gd.defaults["momentum"] == 0
    mom = make_optimizer(sized(optimizer="momentum", momentum=0.8), w)
    assert mom.defaults["momentum"] == 0.8 and not mom.defaults["nesterov"]
    nes = make_optimizer(sized(optimizer="nesterov", momentum=0.7), w)
    assert nes.defaults["momentum"] == 0.7 and nes.defaults["nesterov"]
    assert type(make_optimizer(sized(optimizer="adagrad"), w)) is torch.optim.Adagrad
    rms = make_optimizer(sized(optimizer="rmsprop", momentum=0.5), w)
    assert type(rms) is torch.optim.RMSprop and rms.defaults["momentum"] == 0.5
    adam = make_optimizer(sized(optimizer="adam", betas=(0.8, 0.99)), w)
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.8, 0.99)
    adamw = make_optimizer(sized(optimizer="adamw", weight_decay=0.05), w)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.05


def test_adamw_decay_is_decoupled() -> None:
    """With a zero gradient, AdamW still shrinks the weight by lr*wd; Adam leaves it alone."""
    for name, wd, want in (("adamw", 0.1, 1 - 0.01 * 0.1), ("adam", 0.0, 1.0)):
        w = torch.nn.Parameter(torch.ones(1, 1))
        opt = make_optimizer(sized(optimizer=name, lr=0.01, weight_decay=wd), [w])
        w.grad = torch.zeros_like(w)
        opt.step()
        assert w.item() == pytest.approx(want)


# ------------------------------------------------------------------- bad names and losses


@pytest.mark.parametrize(
    ("factory", "key", "option"),
    [
        (lambda p: make_optimizer(p, [torch.nn.Parameter(torch.zeros(1))]), "optimizer", OptimizerName),
        (make_penalty, "regularizer", Regularizer),
        (lambda p: lr_at(p, 0), "schedule", Schedule),
        (lambda p: make_loss(p.loss), "loss", LossName),
        (lambda p: resolve_loss(p.loss, "regression"), "loss", LossChoice),
    ],
)
def test_factories_name_a_bad_value_and_list_the_literal(factory, key: str, option) -> None:
    bad = sized().model_copy(update={key: "bogus"})  # model_copy skips validation
    with pytest.raises(ValueError) as info:
        factory(bad)
    assert str(info.value) == f"train.{key}: unknown {key} 'bogus' (allowed: {allowed(option)})"


@pytest.mark.parametrize("name", get_args(OptimizerName))
def test_every_optimizer_takes_a_step(name: str) -> None:
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer(sized(optimizer=name, lr=0.1), [w])
    w.grad = torch.ones(3)
    opt.step()
    assert (w < 1).all()


@pytest.mark.parametrize("key", ["optimizer", "regularizer", "schedule", "loss", "model", "activation"])
def test_params_reject_unknown_names(key: str) -> None:
    with pytest.raises(ParamsError, match=rf"train\.{key}: 'bogus' is not allowed"):
        parse_params({"train": {key: "bogus"}})


def test_loss_follows_task() -> None:
    assert resolve_loss("auto", "regression") == "mse"
    assert resolve_loss("auto", "classification") == "cross_entropy"
    assert resolve_loss("huber", "regression") == "huber"
    with pytest.raises(ParamsError) as info:
        resolve_loss("cross_entropy", "regression")
    assert str(info.value) == "train.loss: 'cross_entropy' does not fit a regression task (use auto, mse or huber)"
    with pytest.raises(ParamsError) as info:
        resolve_loss("mse", "classification")
    assert str(info.value) == "train.loss: 'mse' does not fit a classification task (use auto or cross_entropy)"
    with pytest.raises(ValueError, match=r"task: unknown task 'ranking' \(allowed: regression, classification\)"):
        resolve_loss("auto", "ranking")


def test_huber_loss_uses_delta() -> None:
    pred, target = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0])
    # 0.5*0.5² and delta*(3 - delta/2) with delta 1
    assert make_loss("huber", 1.0)(pred, target).item() == pytest.approx((0.125 + 2.5) / 2)
    assert make_loss("mse")(pred, target).item() == pytest.approx((0.25 + 9) / 2)
