"""`auto` batch size, lr and penalty chosen from the train rows (stages/training/sizing.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from stages.core.params import TrainParams
from stages.training.sizing import auto_batch_size, auto_lr, auto_reg_strength, auto_values, sized_for


def test_large_tables_keep_the_fixed_defaults_exactly():
    """The default run (14,000 train rows) must train exactly as before `auto`: same floats."""
    for n in (10_000, 14_000, 10_000_000):
        p = sized_for(TrainParams(), n)
        assert (p.batch_size, p.lr, p.reg_strength) == (256, 0.003, 0.001)
        assert type(p.batch_size) is int


@pytest.mark.parametrize(("n", "batch"), [(1, 32), (150, 32), (309, 32), (700, 64), (1_300, 128),
                                           (2_559, 128), (2_560, 256)])
def test_small_tables_get_ten_or_more_steps_per_epoch(n, batch):
    assert auto_batch_size(n) == batch
    assert batch == 32 or n / batch >= 10


def test_lr_follows_the_square_root_of_the_batch_and_reg_the_inverse_of_the_rows():
    assert auto_lr(256) == 0.003
    assert auto_lr(64) == pytest.approx(0.0015)
    assert auto_lr(32) == pytest.approx(0.003 / np.sqrt(8))
    assert auto_reg_strength(10_000) == 0.001
    assert auto_reg_strength(500) == pytest.approx(0.02)
    assert auto_reg_strength(1) == pytest.approx(10.0)


def test_given_values_are_kept_and_only_auto_ones_are_reported():
    p = sized_for(TrainParams(batch_size=16, reg_strength=0.0), 300)
    assert (p.batch_size, p.reg_strength) == (16, 0.0)
    assert p.lr == pytest.approx(0.003 * np.sqrt(16 / 256))  # auto lr follows the batch actually used
    given = TrainParams(batch_size=16, reg_strength=0.0)
    assert auto_values(given, sized_for(given, 300)) == {"lr": p.lr}
    fixed = TrainParams(lr=0.01, batch_size=64, reg_strength=0.1)
    assert auto_values(fixed, sized_for(fixed, 300)) == {}
    gd = sized_for(TrainParams(optimizer="gd"), 300)
    assert gd.batch_size == 32  # gd ignores it (whole split per step); the value is still concrete


def test_a_training_run_records_what_auto_stood_for_and_says_it_once(caplog):
    from stages.core.contracts import Meta
    from stages.data.splits import Split
    from stages.training.loop import train_model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 2)).astype(np.float32)
    y = (x[:, 0] - x[:, 1]).astype(np.float32)
    splits = {"train": Split(x[:300], y[:300]), "val": Split(x[300:], y[300:])}
    with caplog.at_level(logging.INFO, logger="stages.training.sizing"):
        result = train_model(TrainParams(hidden=(4,), epochs=2), splits, Meta(task="regression",
                             feature_names=["a", "b"], target="y"))
    assert result.metrics["auto_params"] == {"batch_size": 32, "lr": auto_lr(32), "reg_strength": auto_reg_strength(300)}
    assert caplog.text.count("300 train rows:") == 1


def test_a_small_table_says_what_auto_chose(caplog):
    with caplog.at_level(logging.INFO, logger="stages.training.sizing"):
        sized_for(TrainParams(), 300)
    assert "300 train rows: batch_size 32, lr 0.00106, reg_strength 0.0333" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stages.training.sizing"):
        sized_for(TrainParams(), 20_000)
    assert caplog.text == ""  # large tables: nothing to say
