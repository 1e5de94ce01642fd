"""Options dispatched outside params and optim accept exactly the values their Literal declares.

stages/core/params.py declares each option once; these modules dispatch on it. A value added to
a Literal (so params accept it) that a module does not handle, or an error text that lists
other values than the Literal, fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from stages.core.contracts import ModelConfig
from stages.core.params import Activation, Backend, ModelKind, Quantization, Runner, Scaling, TaskName, allowed
from tests.conftest import model_config


def _model_cfg(**kw) -> ModelConfig:
    return model_config(**{"n_features": 3, "hidden": [4], **kw})


@pytest.mark.parametrize("model", get_args(ModelKind))
@pytest.mark.parametrize("activation", get_args(Activation))
@pytest.mark.parametrize("task", get_args(TaskName))
def test_every_model_activation_and_task_builds(model: str, activation: str, task: str) -> None:
    from stages.training.models import build_model

    n_out = 1 if task == "regression" else 3
    build_model(_model_cfg(model=model, activation=activation, task=task, n_outputs=n_out))


@pytest.mark.parametrize(("key", "option"), [("model", ModelKind), ("activation", Activation), ("task", TaskName)],
                         ids=["model", "activation", "task"])
def test_model_errors_list_the_literal(key: str, option) -> None:
    from stages.training.models import build_model

    with pytest.raises(ValueError, match=rf"\(allowed: {allowed(option)}\)"):
        build_model(_model_cfg(**{key: "bogus"}))


def test_every_scaling_is_handled() -> None:
    import numpy as np

    from stages.training.models import build_model, fit_scaling

    x, y = np.ones((4, 3), dtype=np.float32), np.arange(4, dtype=np.float32)
    for scaling in get_args(Scaling):
        fit_scaling(build_model(_model_cfg()), x, y, scaling)
    with pytest.raises(ValueError, match=rf"\(allowed: {allowed(Scaling)}\)"):
        fit_scaling(build_model(_model_cfg()), x, y, "bogus")


def test_every_backend_is_handled() -> None:
    from stages.training.distributed import pick_backend

    assert {pick_backend(b, "cuda") for b in get_args(Backend)} <= set(get_args(Backend))
    with pytest.raises(ValueError, match=rf"\(allowed: {allowed(Backend)}\)"):
        pick_backend("bogus", "cpu")


def test_quantization_error_lists_the_literal(tmp_path: Path) -> None:
    from stages.serving.quantize import quantize_model

    with pytest.raises(ValueError, match=rf"\(allowed: {allowed(Quantization)}\)"):
        quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", "bogus")


def test_every_runner_is_handled() -> None:
    from flows.sweep import make_task_runner
    from stages.core.errors import ParamsError

    for runner in get_args(Runner):
        assert make_task_runner(runner, 1) is not None  # built, not started
    with pytest.raises(ParamsError, match=rf"\(allowed: {allowed(Runner)}\)"):
        make_task_runner("bogus", 1)
