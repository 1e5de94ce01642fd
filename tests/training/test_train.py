"""The training loop: every optimizer x regularizer, convergence, early stopping, divergence,
checkpoints and resume, determinism, and the stage's outputs (in-process and through DVC)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.core import code
from stages.core.contracts import CHECKPOINT_NAME, Meta
from stages.core.errors import DataError, ParamsError, TrainingDiverged
from stages.core.params import DataParams, TrainParams
from stages.data.splits import Split
from stages.train import main
from stages.training.checkpoint import run_fingerprint
from stages.training.loop import evaluate_loss, model_config, train_model
from stages.training.models import build_model, fit_scaling, load_model
from stages.training.optim import lr_at, make_loss
from tests.conftest import make_pipeline_repo, run_cmd, subprocess_env

TIMING_KEYS = {"wall_seconds", "samples_per_second"}
OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
REGULARIZERS = ("none", "l1", "l2", "elastic_net")
# a learning rate each optimizer comfortably trains with on the tiny data below
LR = {"gd": 0.3, "sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.05,
      "rmsprop": 0.003, "adam": 0.01, "adamw": 0.01}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def regression_meta(d: int) -> Meta:
    return Meta(task="regression", feature_names=[f"x{i}" for i in range(d)], target="y")


def linear_splits(n: int, d: int, informative: int, noise: float, seed: int = 0,
                  scales: np.ndarray | None = None) -> tuple[dict[str, Split], np.ndarray]:
    """y = x·coef + 0.5 + noise; the first `informative` coefficients are non-zero. 70/30 split."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    coef = np.zeros(d)
    coef[:informative] = rng.uniform(1, 3, informative) * rng.choice([-1, 1], informative)
    y = x @ coef + 0.5 + noise * rng.standard_normal(n)
    if scales is not None:
        x = x * scales  # same signal, features in other units
    x, y = x.astype(np.float32), y.astype(np.float32)
    k = int(0.7 * n)
    return {"train": Split(x[:k], y[:k]), "val": Split(x[k:], y[k:])}, coef


def blob_splits(n: int = 300, k: int = 3, seed: int = 0) -> tuple[dict[str, Split], dict]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = (rng.standard_normal((n, 4)) + 3 * np.eye(k, 4)[y]).astype(np.float32)
    meta = Meta(task="classification", feature_names=list("abcd"), target="label", classes=list(range(k)))
    m = int(0.7 * n)
    return {"train": Split(x[:m], y[:m]), "val": Split(x[m:], y[m:])}, meta


def initial_loss(p: TrainParams, splits: dict[str, Split], meta: Meta) -> float:
    """Train loss of the untrained model train_model starts from (same seed, same scaling)."""
    cfg = model_config(p, meta)
    m = build_model(cfg, generator=torch.Generator().manual_seed(p.seed))
    fit_scaling(m, splits["train"].x, splits["train"].y, p.scaling)
    return evaluate_loss(m, torch.tensor(splits["train"].x), torch.tensor(splits["train"].y), make_loss(cfg.loss))


def model_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def small(**kw) -> TrainParams:
    base = {"hidden": (8,), "epochs": 10, "batch_size": 32, "early_stopping": {"patience": None}}
    return TrainParams(**{**base, **kw})


# ----------------------------------------------------------------- optimizers x regularizers


@pytest.mark.parametrize("regularizer", REGULARIZERS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_and_regularizer_lowers_the_loss(optimizer: str, regularizer: str) -> None:
    splits, _ = linear_splits(300, 4, 4, 0.3)
    meta = regression_meta(4)
    p = small(optimizer=optimizer, regularizer=regularizer, reg_strength=1e-3, lr=LR[optimizer],
              epochs=30 if optimizer == "gd" else 10, weight_decay=0.01 if optimizer == "adamw" else 0.0)
    before = initial_loss(p, splits, meta)
    r = train_model(p, splits, meta)
    assert r.metrics["epochs_run"] == p.epochs
    assert r.history[-1]["train_loss"] < 0.2 * before
    assert r.history[-1]["val_loss"] < 0.2 * before


def test_classification_trains_softmax_logits() -> None:
    splits, meta = blob_splits()
    for model in ("linear", "mlp"):
        r = train_model(small(model=model, optimizer="adam", lr=0.05, epochs=15), splits, meta)
        assert r.config.loss == "cross_entropy" and r.config.n_outputs == 3
        logits = r.model(torch.tensor(splits["val"].x))
        assert logits.shape == (len(splits["val"].y), 3)
        assert (logits.argmax(1).numpy() == splits["val"].y).mean() > 0.9
    with pytest.raises(ParamsError, match="train.loss: 'mse' does not fit a classification"):
        train_model(small(loss="mse"), splits, meta)
    with pytest.raises(ParamsError, match="train.loss: 'cross_entropy' does not fit a regression"):
        train_model(small(loss="cross_entropy"), *_regression_case())


def _regression_case() -> tuple[dict[str, Split], dict]:
    return linear_splits(100, 3, 3, 0.1)[0], regression_meta(3)


def test_huber_loss_reports_in_target_units() -> None:
    splits, meta = _regression_case()
    r = train_model(small(loss="huber", huber_delta=0.5, optimizer="adam", lr=0.01), splits, meta)
    pred = r.model(torch.tensor(splits["val"].x))
    want = torch.nn.functional.huber_loss(pred, torch.tensor(splits["val"].y), delta=0.5).item()
    assert r.metrics["val_loss"] == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("scaling", ["none", "standard"])
def test_full_batch_gd_converges_to_least_squares(scaling: str) -> None:
    splits, _ = linear_splits(200, 3, 3, 0.3, seed=1)
    p = TrainParams(model="linear", optimizer="gd", lr=0.3, epochs=300, regularizer="none", scaling=scaling,
                    early_stopping={"patience": None})
    r = train_model(p, splits, regression_meta(3))
    x, y = splits["train"].x.astype(np.float64), splits["train"].y.astype(np.float64)
    want, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    # read the fitted affine map off the model (it includes the built-in scaling)
    with torch.no_grad():
        probe = torch.cat([torch.zeros(1, 3), torch.eye(3)])
        out = r.model(probe).double().numpy()
    got = np.r_[out[1:] - out[0], out[0]]
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_l1_drives_uninformative_coefficients_nearer_zero_than_l2() -> None:
    splits, coef = linear_splits(600, 20, 3, 1.0)
    weights = {}
    for reg in ("l1", "l2"):
        # subgradient steps need a decaying lr to settle at zero: cosine
        p = TrainParams(model="linear", optimizer="gd", lr=0.2, epochs=300, regularizer=reg, reg_strength=0.1,
                        scaling="none", schedule="cosine", early_stopping={"patience": None})
        weights[reg] = train_model(p, splits, regression_meta(20)).model.net[0].weight.detach().numpy().ravel()
    l1_noise, l2_noise = np.abs(weights["l1"][3:]).mean(), np.abs(weights["l2"][3:]).mean()
    assert l1_noise < 0.3 * l2_noise, (l1_noise, l2_noise)
    np.testing.assert_allclose(weights["l1"][:3], coef[:3], atol=0.3)  # the real signal survives


def test_training_loop_penalises_weights_not_biases() -> None:
    """Full-batch GD with l2 converges to ridge regression with an unpenalised intercept.

    Raw units (scaling none) and a target offset of 5: with standardised features and target the
    intercept's optimum is 0 with or without a penalty, and a penalised bias would go unseen."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 2)).astype(np.float32)
    y = (5.0 + x @ np.array([2.0, -1.0]) + 0.1 * rng.standard_normal(60)).astype(np.float32)
    splits = {"train": Split(x[:40], y[:40]), "val": Split(x[40:], y[40:])}
    lam = 1.0  # large: it halves the weights
    p = TrainParams(model="linear", optimizer="gd", lr=0.2, epochs=50, regularizer="l2", reg_strength=lam,
                    scaling="none", early_stopping={"patience": None})
    layer = train_model(p, splits, regression_meta(2)).model.net[0]
    # minimise mean((x·w + b - y)²) + λ·|w|²: the normal equations, λ on w only
    xt, yt = x[:40].astype(np.float64), y[:40].astype(np.float64)
    a = np.c_[xt, np.ones(len(xt))]
    want = np.linalg.solve(a.T @ a / len(a) + lam * np.diag([1.0, 1.0, 0.0]), a.T @ yt / len(a))
    got = np.r_[layer.weight.detach().numpy().ravel(), layer.bias.detach().numpy()]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert abs(got[2] - yt.mean()) < 0.3  # the bias keeps the target's offset; a penalised one halves it


def test_default_params_handle_columns_in_the_thousands_next_to_tiny_ones() -> None:
    """Raw columns ×1000 and ×0.001 (plus a target offset): defaults train near the noise floor."""
    scales = np.array([1000, 0.001, 1000, 0.001, 1, 1])
    splits, _ = linear_splits(2000, 6, 6, 1.0, seed=3, scales=scales)
    scaled = train_model(TrainParams(), splits, regression_meta(6))
    assert scaled.metrics["best_val_loss"] < 1.6  # noise variance 1.0; var(y) is about 22
    unscaled = train_model(TrainParams(scaling="none"), splits, regression_meta(6))
    assert unscaled.metrics["best_val_loss"] > 3 * scaled.metrics["best_val_loss"]


# ------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("schedule", ["constant", "exponential", "step", "cosine"])
def test_history_records_the_scheduled_lr(schedule: str) -> None:
    splits, meta = _regression_case()
    p = small(schedule=schedule, lr=0.05, gamma=0.7, step_size=3, warmup_epochs=2, epochs=9, optimizer="sgd")
    r = train_model(p, splits, meta)
    assert [h["lr"] for h in r.history] == [lr_at(p, e) for e in range(9)]
    assert [h["epoch"] for h in r.history] == list(range(1, 10))


# -------------------------------------------------------------------------- early stopping


def test_early_stopping_triggers_and_restores_the_best_epoch() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    y = rng.standard_normal(300).astype(np.float32)  # pure noise: val loss rises as the mlp memorises
    splits = {"train": Split(x[:200], y[:200]), "val": Split(x[200:], y[200:])}
    p = TrainParams(hidden=(64, 64), lr=0.01, epochs=200, batch_size=32, early_stopping={"patience": 3})
    r = train_model(p, splits, regression_meta(5))
    m, vals = r.metrics, [h["val_loss"] for h in r.history]
    assert m["stopped_early"] and m["restored_best"] and m["epochs_run"] < 200
    assert m["epochs_run"] == m["best_epoch"] + 3
    assert m["best_val_loss"] == min(vals) == vals[m["best_epoch"] - 1]
    assert m["val_loss"] == vals[-1] > m["best_val_loss"]
    restored = evaluate_loss(r.model, torch.tensor(splits["val"].x), torch.tensor(splits["val"].y), make_loss("mse"))
    assert restored == pytest.approx(m["best_val_loss"], rel=1e-6)


def test_min_delta_and_disabled_early_stopping() -> None:
    splits, meta = _regression_case()
    r = train_model(small(early_stopping={"patience": 2, "min_delta": 1e9}), splits, meta)
    assert r.metrics["epochs_run"] == 3 and r.metrics["best_epoch"] == 1 and r.metrics["stopped_early"]
    r = train_model(small(epochs=6), splits, meta)  # patience null: every epoch, last weights kept
    assert r.metrics["epochs_run"] == 6 and not r.metrics["stopped_early"] and not r.metrics["restored_best"]


def test_progress_bar_only_when_asked(capsys) -> None:
    splits, meta = _regression_case()
    train_model(small(epochs=3), splits, meta)
    assert "epoch" not in capsys.readouterr().err
    train_model(small(epochs=3), splits, meta, progress="bar")
    assert "3/3" in capsys.readouterr().err


# ------------------------------------------------------------------------------ divergence


def test_divergence_stops_with_a_clear_error() -> None:
    splits, meta = _regression_case()
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d+ \(loss (nan|inf)\); "
                                               r"lower train.lr \(now 100\) or set train.grad_clip"):
        train_model(small(optimizer="sgd", lr=100, hidden=(32, 32)), splits, meta)


def test_grad_clip_is_applied() -> None:
    splits, meta = _regression_case()
    free = train_model(small(optimizer="sgd", lr=0.05), splits, meta)
    clipped = train_model(small(optimizer="sgd", lr=0.05, grad_clip=1e-3), splits, meta)
    assert clipped.metrics["train_loss"] > free.metrics["train_loss"]  # tiny clipped steps learn less


def test_grad_clip_scales_the_whole_gradient_to_norm_grad_clip() -> None:
    # a linear model starts at zero: the first full-batch gradient of mean((w·x + b - y)²) is
    # (-2·mean(x·y), -2·mean(y)), norm about 100 here; clipped to norm 0.5, plain GD moves the
    # parameters by exactly lr·0.5 along it
    x = np.array([[1.0], [2.0], [3.0]], np.float32)
    y = np.array([10.0, 20.0, 30.0], np.float32)
    splits = {"train": Split(x, y), "val": Split(x, y)}
    p = TrainParams(model="linear", optimizer="gd", lr=0.1, epochs=1, regularizer="none", scaling="none",
                    grad_clip=0.5, early_stopping={"patience": None})
    layer = train_model(p, splits, regression_meta(1)).model.net[0]
    step = np.r_[layer.weight.detach().numpy().ravel(), layer.bias.detach().numpy()]  # minus zero
    grad = np.array([-2 * np.mean(x[:, 0] * y), -2 * np.mean(y)])
    assert np.linalg.norm(grad) > 100 * p.grad_clip  # far above the clip: clipping decides the step
    assert np.linalg.norm(step) == pytest.approx(p.lr * p.grad_clip, rel=1e-5)
    np.testing.assert_allclose(step, -p.lr * p.grad_clip * grad / np.linalg.norm(grad), rtol=1e-5)


def test_bad_data_is_a_data_error() -> None:
    splits, meta = _regression_case()
    bad_x = splits["train"].x.copy()
    bad_x[3, 1] = np.nan
    with pytest.raises(DataError, match="1 missing or infinite feature values"):
        train_model(small(), {**splits, "train": Split(bad_x, splits["train"].y)}, meta)
    with pytest.raises(DataError, match="expected rows x 4"):
        train_model(small(), splits, regression_meta(4))
    cls_splits, cls_meta = blob_splits()
    with pytest.raises(DataError, match=r"class labels outside 0..1"):
        train_model(small(), cls_splits, replace(cls_meta, classes=[0, 1]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_requested_without_cuda_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match="train.device: 'cuda'"):
        train_model(small(device="cuda"), *_regression_case())


# ----------------------------------------------------------------- determinism and resume


def test_two_runs_give_identical_results() -> None:
    splits, _ = linear_splits(300, 4, 4, 0.3)
    p = small(dropout=0.2, hidden=(16, 16), optimizer="adam", lr=0.01, early_stopping={"patience": 5})
    a, b = train_model(p, splits, regression_meta(4)), train_model(p, splits, regression_meta(4))
    assert model_bytes(a.model) == model_bytes(b.model)
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING_KEYS}  # noqa: E731
    assert strip(a.metrics) == strip(b.metrics)
    assert [{**h, "epoch_seconds": 0} for h in a.history] == [{**h, "epoch_seconds": 0} for h in b.history]
    c = train_model(p.model_copy(update={"seed": 1}), splits, regression_meta(4))
    assert model_bytes(c.model) != model_bytes(a.model)


class Interrupt(Exception):
    pass


def interrupt_at(epoch: int):
    def hook(rec: dict) -> None:
        if rec["epoch"] == epoch:
            raise Interrupt

    return hook


@pytest.mark.parametrize(("optimizer", "extra"), [("adam", {"dropout": 0.1}), ("nesterov", {"regularizer": "l1"}),
                                                  ("rmsprop", {"lr": 0.003})])
def test_resume_after_interruption_gives_the_identical_model(tmp_path: Path, optimizer: str, extra: dict) -> None:
    splits, _ = linear_splits(300, 4, 4, 0.3)
    meta = regression_meta(4)
    p = small(optimizer=optimizer, lr=extra.pop("lr", 0.01), hidden=(16, 16), epochs=12, checkpoint_every=3,
              schedule="cosine", early_stopping={"patience": 50}, **extra)
    reference = train_model(p, splits, meta)

    with pytest.raises(Interrupt):
        train_model(p, splits, meta, checkpoint_dir=tmp_path, on_epoch_end=interrupt_at(8))
    assert (tmp_path / CHECKPOINT_NAME).exists()
    resumed = train_model(p, splits, meta, checkpoint_dir=tmp_path)
    assert resumed.metrics["resumed_from_epoch"] == 6
    assert model_bytes(resumed.model) == model_bytes(reference.model)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in reference.history]
    assert resumed.metrics["best_epoch"] == reference.metrics["best_epoch"]


def test_checkpoint_of_other_params_or_a_torn_one_is_ignored(tmp_path: Path) -> None:
    splits, _ = linear_splits(300, 4, 4, 0.3)
    meta = regression_meta(4)
    p = small(epochs=8, checkpoint_every=2, optimizer="adam", lr=0.01)
    with pytest.raises(Interrupt):
        train_model(p, splits, meta, checkpoint_dir=tmp_path, on_epoch_end=interrupt_at(5))
    other = p.model_copy(update={"lr": 0.02})
    r = train_model(other, splits, meta, checkpoint_dir=tmp_path)
    assert r.metrics["resumed_from_epoch"] == 0
    assert model_bytes(r.model) == model_bytes(train_model(other, splits, meta).model)
    # a different checkpoint_every does not change the result, so it may resume
    with pytest.raises(Interrupt):
        train_model(p, splits, meta, checkpoint_dir=tmp_path, on_epoch_end=interrupt_at(5))
    assert train_model(p.model_copy(update={"checkpoint_every": 3}), splits, meta,
                       checkpoint_dir=tmp_path).metrics["resumed_from_epoch"] == 4
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"torn")
    assert train_model(p, splits, meta, checkpoint_dir=tmp_path).metrics["resumed_from_epoch"] == 0


def test_checkpoint_fingerprint_changes_with_the_data_and_the_code(tmp_path: Path, monkeypatch) -> None:
    splits, _ = linear_splits(10, 2, 2, 0.3)
    p, cpu = small(), torch.device("cpu")
    cfg = model_config(p, regression_meta(2))

    def fingerprint(**changed: Split) -> str:
        return run_fingerprint(p, {**splits, **changed}, cfg, cpu)

    def nudged(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[0] += 1
        return a

    base = fingerprint()
    same = {name: Split(s.x.copy(), s.y.copy()) for name, s in splits.items()}
    assert fingerprint(**same) == base  # the content counts, not the arrays' identity
    for name in ("train", "val"):
        s = splits[name]
        assert fingerprint(**{name: Split(nudged(s.x), s.y)}) != base, f"{name} features"
        assert fingerprint(**{name: Split(s.x, nudged(s.y))}) != base, f"{name} targets"
    # the code training runs: every module the training loop imports, as it is on disk
    # (tests/core/test_code.py checks which files those are)
    copy = tmp_path / "copy"
    shutil.copytree(code.PACKAGE_DIR, copy / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PACKAGE_DIR", copy / "stages")
    assert fingerprint() == base  # the same bytes read from elsewhere
    files = code.imported_files(*code.TRAINING_CODE)
    assert copy / "stages" / "training" / "distributed.py" in files
    for path in files:
        before = path.read_bytes()
        path.write_bytes(before + b"# an edit\n")
        assert fingerprint() != base, path
        path.write_bytes(before)


# --------------------------------------------------------------------- the stage entry point


PARAMS = """\
data: {{n_samples: 400, seed: 3}}
train: {{hidden: [8], epochs: {epochs}, batch_size: 64, checkpoint_every: 2, lr: {lr}, optimizer: {opt}}}
"""


def _stage_dir(tmp_path: Path, epochs: int = 4, lr: float = 0.01, opt: str = "adam") -> Path:
    from stages.generate import run as generate

    generate(DataParams(n_samples=400, seed=3), tmp_path / "data")
    (tmp_path / "params.yaml").write_text(PARAMS.format(epochs=epochs, lr=lr, opt=opt))
    return tmp_path


def test_main_writes_model_metrics_history_and_live_plots(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(_stage_dir(tmp_path))
    main()
    model, cfg = load_model("models/model.pt")
    assert cfg.task == "regression" and cfg.feature_names == [f"x{i}" for i in range(10)]
    blob = torch.load("models/model.pt", weights_only=True)
    assert {"x_mean", "x_std", "y_mean", "y_std"} <= blob["state_dict"].keys()
    metrics = json.loads(Path("metrics/train.json").read_text())
    for key in ("epochs_run", "best_epoch", "train_loss", "val_loss", "best_val_loss", "wall_seconds",
                "samples_per_second", "device", "stopped_early"):
        assert key in metrics
    assert metrics["epochs_run"] == 4 and metrics["device"] in ("cpu", "cuda")
    lines = Path("metrics/train_history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,val_loss,lr,epoch_seconds" and len(lines) == 5
    tsv = Path("dvclive/plots/metrics/val_loss.tsv").read_text().splitlines()
    assert tsv[0] == "step\tval_loss" and len(tsv) == 5
    assert [f.name for f in Path("checkpoints").iterdir()] == ["README.txt"]  # cleared after success


def test_main_diverging_writes_no_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(_stage_dir(tmp_path, lr=100, opt="sgd"))
    with pytest.raises(TrainingDiverged):
        main()
    assert not Path("models/model.pt").exists() and not Path("metrics/train.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trains_on_cuda(precision: str) -> None:
    splits, _ = linear_splits(2000, 4, 4, 0.3)
    meta = regression_meta(4)
    p = small(device="cuda", precision=precision, optimizer="adam", lr=0.01, epochs=20, hidden=(32, 32))
    before = initial_loss(p, splits, meta)
    r = train_model(p, splits, meta)
    assert r.metrics["device"] == "cuda" and r.metrics["precision"] == precision
    assert next(r.model.parameters()).device.type == "cpu"
    assert r.history[-1]["val_loss"] < 0.2 * before


# ------------------------------------------------------------------------- through DVC (slow)


def small_repo(dest: Path, data: dict, train: dict) -> Path:
    """A git + DVC copy of the project: the real params.yaml with small data and train sections
    (DVC wants every stage's params section present, so the others stay as they are)."""
    import yaml

    from tests.conftest import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(data)
    params["train"].update(train)
    return make_pipeline_repo(dest, yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_train_and_plots(tmp_path: Path) -> None:
    pipeline_repo = small_repo(tmp_path / "repo", {"n_samples": 600, "seed": 7},
                               {"hidden": [16], "epochs": 5, "batch_size": 64, "checkpoint_every": 2})
    run_cmd(["dvc", "repro", "train"], pipeline_repo)
    assert (pipeline_repo / "models/model.pt").exists()
    metrics = json.loads((pipeline_repo / "metrics/train.json").read_text())
    assert metrics["epochs_run"] == 5
    shown = run_cmd(["dvc", "plots", "show", "--json"], pipeline_repo)
    plots = json.loads(shown.stdout)["data"]  # ("errors" lists other stages' plots not made yet)
    assert any("dvclive/plots/metrics/val_loss.tsv" in k for k in plots)
    curves = json.dumps(plots["train_loss"])  # the top-level train/val curve from train_history.csv
    assert '"val_loss": "' in curves and '"train_loss": "' in curves
    run_cmd(["dvc", "plots", "show"], pipeline_repo)  # renders dvc_plots/index.html
    assert (pipeline_repo / "dvc_plots/index.html").exists()
    again = run_cmd(["dvc", "repro", "train"], pipeline_repo)
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    assert run_cmd(["dvc", "status", "train"], pipeline_repo).stdout.strip().endswith("up to date.")


@pytest.mark.slow
def test_killed_stage_resumes_under_dvc_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "repo", {"n_samples": 1000, "seed": 5},
                      {"hidden": [16], "epochs": 150, "batch_size": 64, "checkpoint_every": 5,
                       "early_stopping": {"patience": None}})
    run_cmd(["dvc", "repro", "train"], repo)
    reference = (repo / "models/model.pt").read_bytes()
    run_cmd(["dvc", "repro", "-f", "-s", "train"], repo)  # forced rerun: same bytes again
    assert (repo / "models/model.pt").read_bytes() == reference

    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = repo / "checkpoints" / CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert ckpt.exists(), "the run ended before its first checkpoint; raise train.epochs"
    done = torch.load(ckpt, weights_only=True)["run"]["epoch"]
    assert 0 < done < 150

    # DVC deletes the stage's other outputs before rerunning it, but keeps the persistent checkpoints
    out = run_cmd(["dvc", "repro", "train"], repo)
    assert "resuming from checkpoints/checkpoint.pt" in out.stdout + out.stderr
    assert (repo / "models/model.pt").read_bytes() == reference
    assert json.loads((repo / "metrics/train.json").read_text())["resumed_from_epoch"] == done
    history = (repo / "metrics/train_history.csv").read_text().splitlines()
    assert len(history) == 151  # header + every epoch, the resumed ones included
