"""The regression target's transform: auto's decision, the explicit choices, and a log1p model
that fits the transformed target yet predicts, and is scored, in the target's units."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch

from stages.core.contracts import Meta
from stages.core.errors import ParamsError
from stages.core.params import TargetTransformName, TrainParams
from stages.data.splits import Split
from stages.training.loop import model_config, train_model
from stages.training.models import build_model, fit_scaling
from stages.training.targets import TARGET_TRANSFORMS, auto_transform, resolve_target_transform, skewness
from tests.conftest import model_config as make_config

RNG = np.random.default_rng(0)
LOGNORMAL = RNG.lognormal(3.0, 1.0, 5000)  # prices, incomes: skewness about 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_registry_covers_the_literal() -> None:
    assert tuple(TARGET_TRANSFORMS) == get_args(TargetTransformName)


@pytest.mark.parametrize(("y", "expected"), [
    (LOGNORMAL, "log1p"),
    (RNG.exponential(2.0, 5000), "log1p"),  # waiting times: skewness 2
    (RNG.poisson(0.5, 5000).astype(float), "log1p"),  # sparse counts
    (RNG.standard_normal(5000) + 10, "none"),  # symmetric
    (RNG.uniform(0, 1, 5000), "none"),
    (LOGNORMAL - 1.0, "none"),  # skewed, but below zero somewhere
    (np.full(100, 3.0), "none"),  # constant: no skewness at all
    (RNG.chisquare(20, 5000), "none"),  # skewness 0.6: mild
    (np.array([], dtype=float), "none"),
])
def test_auto_picks_log1p_for_non_negative_right_skewed_targets(y: np.ndarray, expected: str) -> None:
    assert auto_transform(y) == expected


def test_auto_keeps_the_default_data_untransformed(tmp_path) -> None:
    """friedman (the default run) is near-symmetric (skewness 0.03): none, so its model is unchanged."""
    from stages.core.contracts import load_meta
    from stages.core.params import DataParams
    from stages.data.splits import read_split
    from stages.generate import run as generate

    generate(DataParams(n_samples=5000), tmp_path)
    meta = load_meta(tmp_path)
    y = read_split("train", meta, tmp_path).y
    assert abs(skewness(y)) < 0.5 and auto_transform(y) == "none"
    assert model_config(TrainParams(), meta, y).target_transform is None


def test_skewness_is_the_moment_coefficient() -> None:
    assert skewness(np.array([1.0, 2.0, 3.0])) == 0.0
    assert skewness(np.array([0.0, 0.0, 0.0, 10.0])) == pytest.approx(1.1547, rel=1e-4)


def test_resolve_the_choice_for_a_run() -> None:
    assert resolve_target_transform("auto", "regression", LOGNORMAL) == "log1p"
    assert resolve_target_transform("auto", "regression", RNG.standard_normal(100)) is None
    assert resolve_target_transform("auto", "regression", None) is None  # no targets: nothing to judge
    assert resolve_target_transform("none", "regression", LOGNORMAL) is None  # stored as None: the plain model
    assert resolve_target_transform("log1p", "regression", np.array([-0.5, 3.0])) == "log1p"
    assert resolve_target_transform("auto", "classification", np.array([0, 1, 1])) is None
    with pytest.raises(ParamsError, match=r"train\.target_transform: 'log1p' applies to regression targets"):
        resolve_target_transform("log1p", "classification", np.array([0, 1]))
    with pytest.raises(ParamsError, match=r"needs train targets above -1 \(the smallest is -2\)"):
        resolve_target_transform("log1p", "regression", np.array([-2.0, 3.0]))
    with pytest.raises(ValueError, match=r"unknown target_transform 'sqrt' \(allowed: auto, none, log1p\)"):
        resolve_target_transform("sqrt", "regression", LOGNORMAL)


def test_a_log1p_model_fits_the_transformed_target_and_predicts_in_target_units() -> None:
    x = RNG.standard_normal((200, 3)).astype(np.float32)
    y = np.exp(1 + x[:, 0]).astype(np.float32)
    m = build_model(make_config(target_transform="log1p"), generator=torch.Generator().manual_seed(0))
    fit_scaling(m, x, y, "standard")
    t = np.log1p(y.astype(np.float64))
    assert m.y_mean.item() == pytest.approx(t.mean(), rel=1e-6) and m.y_std.item() == pytest.approx(t.std(), rel=1e-6)
    yt = torch.from_numpy(y)
    torch.testing.assert_close(m.fit_target(yt), (torch.log1p(yt) - m.y_mean) / m.y_std)
    xt = torch.from_numpy(x)
    torch.testing.assert_close(m(xt), torch.expm1(m.raw(xt) * m.y_std + m.y_mean))
    with pytest.raises(ValueError, match="unknown target_transform 'cube'"):
        build_model(make_config(target_transform="cube"))


def test_training_on_a_skewed_target_reports_losses_in_its_units() -> None:
    x = RNG.standard_normal((1200, 3)).astype(np.float32)
    y = np.exp(1.5 + x[:, 0] - 0.5 * x[:, 1] + 0.1 * RNG.standard_normal(1200)).astype(np.float32)
    meta = Meta(task="regression", feature_names=["a", "b", "c"], target="y")
    splits = {"train": Split(x[:900], y[:900]), "val": Split(x[900:], y[900:])}
    p = TrainParams(hidden=(16,), epochs=30, batch_size=64, lr=0.01, reg_strength=0.001, early_stopping={"patience": None})
    result = train_model(p, splits, meta)
    assert result.config.target_transform == "log1p" and result.config.to_dict()["target_transform"] == "log1p"
    with torch.no_grad():
        pred = result.model(torch.from_numpy(x[900:])).numpy()
    mse = float(np.mean((pred.astype(np.float64) - y[900:]) ** 2))
    assert result.metrics["val_loss"] == pytest.approx(mse, rel=1e-4)  # MSE in the target's units
    assert mse < 0.1 * float(np.var(y[900:]))
    plain = train_model(p.model_copy(update={"target_transform": "none"}), splits, meta)
    assert plain.config.target_transform is None and "target_transform" not in plain.config.to_dict()


def test_model_config_decides_from_the_train_targets() -> None:
    meta = Meta(task="regression", feature_names=["a"], target="y")
    assert model_config(TrainParams(), meta, LOGNORMAL).target_transform == "log1p"
    assert model_config(TrainParams(target_transform="none"), meta, LOGNORMAL).target_transform is None
    assert model_config(TrainParams(), meta).target_transform is None
