"""Early stopping's decisions, directly (the loop's end-to-end tests are in test_train.py)."""

from __future__ import annotations

import math

import torch

from stages.training.early_stopping import EarlyStopping


def _model(value: float) -> torch.nn.Module:
    m = torch.nn.Linear(1, 1)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(value)
    return m


def test_stops_after_patience_epochs_without_improvement() -> None:
    stopper, m = EarlyStopping(patience=2), _model(0.0)
    assert [stopper.update(e, loss, m) for e, loss in enumerate([3.0, 2.0, 2.5, 2.0, 1.0, 1.5, 1.2], 1)] == [
        False, False, False, True, False, False, True]
    assert (stopper.best_loss, stopper.best_epoch, stopper.bad_epochs) == (1.0, 5, 2)


def test_an_improvement_must_beat_min_delta() -> None:
    stopper, m = EarlyStopping(patience=2, min_delta=0.5), _model(0.0)
    assert not stopper.update(1, 3.0, m)
    assert not stopper.update(2, 2.6, m)  # better, but by less than min_delta
    assert stopper.update(3, 2.55, m)
    assert (stopper.best_loss, stopper.best_epoch) == (3.0, 1)


def test_patience_none_never_stops_and_keeps_no_weights() -> None:
    stopper, m = EarlyStopping(patience=None), _model(0.0)
    assert not any(stopper.update(e, float(e), m) for e in range(1, 50))
    assert (stopper.best_loss, stopper.best_epoch, stopper.bad_epochs) == (1.0, 1, 48)
    assert stopper.best_state is None and not stopper.restore_best(m)


def test_the_best_weights_are_a_copy_and_come_back() -> None:
    stopper, m = EarlyStopping(patience=3), _model(1.0)
    stopper.update(1, 1.0, m)
    with torch.no_grad():
        m.weight.fill_(7.0)  # training goes on in place
    stopper.update(2, 2.0, m)
    assert stopper.restore_best(m)
    assert m.weight.item() == 1.0


def test_state_round_trips_exactly() -> None:
    stopper, m = EarlyStopping(patience=3, min_delta=0.1), _model(2.0)
    stopper.update(1, 1.0, m)
    stopper.update(2, 1.5, m)
    again = EarlyStopping(patience=3, min_delta=0.1)
    again.load_state_dict(stopper.state_dict(), torch.device("cpu"))
    assert (again.best_loss, again.best_epoch, again.bad_epochs) == (1.0, 1, 1)
    assert all(torch.equal(again.best_state[k], v) for k, v in stopper.best_state.items())
    # the same next decisions as the original
    assert [again.update(e, 1.2, m) for e in (3, 4)] == [stopper.update(e, 1.2, m) for e in (3, 4)] == [False, True]


def test_a_fresh_stopper_takes_any_finite_loss_as_best() -> None:
    stopper = EarlyStopping(patience=1)
    assert stopper.best_loss == math.inf
    assert not stopper.update(1, 1e30, _model(0.0)) and stopper.best_epoch == 1
