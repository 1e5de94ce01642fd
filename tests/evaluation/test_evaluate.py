"""Metrics (against hand-computed values and brute force), evaluate_model, the stage's files,
and the three fit scenarios: in-process on small data, and end to end with `dvc repro`."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from stages import evaluate
from stages.core import contracts
from stages.core.contracts import Meta
from stages.core.errors import DataError
from stages.core.params import EvaluateParams, parse_params
from stages.data.splits import Split
from stages.evaluation import report as eval_report
from stages.evaluation import scoring
from stages.evaluation.metrics import (
    average_ranks,
    baseline_metrics,
    binary_roc_auc,
    compute_metrics,
    confusion_matrix,
    roc_auc,
    softmax,
)
from tests.conftest import ROOT, make_pipeline_repo, run_cmd

# ----------------------------------------------------------------------------- metrics


def test_regression_metrics_by_hand():
    m = compute_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert m["mse"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(1 / 3))
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["r2"] == pytest.approx(1 - 1 / 2)  # SSE 1, SST 2


def test_standard_errors_of_the_losses():
    m = compute_metrics("regression", np.zeros(4), np.array([0.0, 1.0, 0.0, 1.0]))
    assert m["mse_se"] == pytest.approx(np.std([0, 1, 0, 1], ddof=1) / 2)
    assert compute_metrics("regression", np.zeros(1), np.ones(1))["mse_se"] == 0.0
    c = compute_metrics("classification", np.array([0, 1]), np.log(np.array([[0.5, 0.5], [0.2, 0.8]])))
    nll = -np.log([0.5, 0.8])
    assert c["log_loss_se"] == pytest.approx(np.std(nll, ddof=1) / np.sqrt(2))


def test_r2_of_a_constant_target_is_finite():
    assert compute_metrics("regression", np.ones(3), np.ones(3))["r2"] == 1.0
    assert compute_metrics("regression", np.ones(3), np.zeros(3))["r2"] == 0.0


def test_average_ranks_match_brute_force_with_ties():
    v = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    brute = [1 + sum(w < x for w in v) + (sum(w == x for w in v) - 1) / 2 for x in v]
    assert average_ranks(v).tolist() == pytest.approx(brute)


def _auc_brute(pos: np.ndarray, score: np.ndarray) -> float:
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
             for a, b in itertools.product(score[pos], score[~pos])]
    return float(np.mean(pairs))


def test_binary_roc_auc_by_hand_and_with_ties():
    assert binary_roc_auc(np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert binary_roc_auc(np.array([0, 0, 1, 1], bool), np.array([0.2, 0.5, 0.5, 0.9])) == pytest.approx(0.875)
    assert binary_roc_auc(np.array([0, 1], bool), np.array([0.5, 0.5])) == 0.5
    assert binary_roc_auc(np.array([1, 1], bool), np.array([0.1, 0.2])) is None  # one class only
    rng = np.random.default_rng(0)
    pos = rng.random(200) < 0.3
    score = np.round(rng.random(200) + pos * 0.3, 1)  # rounded: many ties
    assert binary_roc_auc(pos, score) == pytest.approx(_auc_brute(pos, score))


def test_multiclass_roc_auc_is_the_macro_mean_of_one_vs_rest():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = softmax(rng.normal(size=(300, 3)) + np.eye(3)[y])
    expected = np.mean([_auc_brute(y == c, proba[:, c]) for c in range(3)])
    assert roc_auc(y, proba) == pytest.approx(expected)
    # a class absent from y_true has no curve and is left out of the mean
    y2 = np.where(y == 2, 0, y)
    expected2 = np.mean([_auc_brute(y2 == c, proba[:, c]) for c in (0, 1)])
    assert roc_auc(y2, proba) == pytest.approx(expected2)


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    logits = np.log(np.full((5, 3), 0.1) + 0.7 * np.eye(3)[pred])  # p = 0.8 on the prediction
    m = compute_metrics("classification", y, logits, n_classes=3)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["error_rate"] == pytest.approx(0.4)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: class 0 = 2*1/(2+2), class 1 = 2*2/(2+3), class 2 = 0
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    probs_of_truth = [0.8 / 1.0, 0.1, 0.8, 0.8, 0.1]
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(probs_of_truth)), rel=1e-6)
    assert 0 <= m["roc_auc"] <= 1


def test_log_loss_is_finite_for_a_confident_mistake():
    m = compute_metrics("classification", np.array([0, 1]), np.array([[0.0, 1000.0], [0.0, 1000.0]]))
    assert np.isfinite(m["log_loss"]) and m["log_loss"] == pytest.approx(-np.log(1e-15) / 2)


def test_confusion_matrix_rows_are_actual():
    assert confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2).tolist() == [[0, 1], [1, 1]]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="logits of shape"):
        compute_metrics("classification", np.array([0, 1]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="expected 3 classes"):
        compute_metrics("classification", np.array([0, 1]), np.zeros((2, 2)), n_classes=3)
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        compute_metrics("regression", np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        compute_metrics("ranking", np.zeros(3), np.zeros(3))


def test_baselines():
    reg = baseline_metrics("regression", np.array([1.0, 3.0]), np.array([2.0, 4.0]))
    assert reg["mse"] == pytest.approx(((2 - 2) ** 2 + (4 - 2) ** 2) / 2)
    cls = baseline_metrics("classification", np.array([0, 0, 0, 1]), np.array([0, 1]))
    assert cls["accuracy"] == 0.5  # always the majority class 0
    assert cls["log_loss"] == pytest.approx(-(np.log(0.75) + np.log(0.25)) / 2)
    assert cls["roc_auc"] == 0.5  # constant scores: every pair tied
    # a class missing from train gets probability 0, clipped, not a crash
    cls3 = baseline_metrics("classification", np.array([0, 1]), np.array([2]), n_classes=3)
    assert np.isfinite(cls3["log_loss"])


# ----------------------------------------------------------------------- evaluate_model


class Affine(nn.Module):
    """y = x @ w + b, a stand-in model with known outputs."""

    def __init__(self, w: list[float], b: float = 0.0) -> None:
        super().__init__()
        self.lin = nn.Linear(len(w), 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([w]))
            self.lin.bias.fill_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).squeeze(-1)


def _linear_splits(noise: float, seed: int = 0) -> dict[str, Split]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("train", 400), ("val", 200), ("test", 200)):
        x = rng.normal(size=(n, 2)).astype(np.float32)
        y = (x @ np.array([2.0, -1.0]) + noise * rng.normal(size=n)).astype(np.float32)
        out[name] = Split(x, y)
    return out


META = Meta.from_dict({"task": "regression", "classes": None, "feature_names": ["a", "b"], "target": "y",
        "source": "synthetic", "kind": "linear", "ground_truth": {"irreducible": {"mse": 0.25}}})
HISTORY = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "val_loss": 1.1 / (i + 1)} for i in range(10)]


def test_evaluate_model_true_function_is_good_and_json_ready():
    # this sample happens to put the val MSE 34% above the train MSE (0.29 vs 0.22): sampling
    # noise of 200 val rows (2.4 standard errors), which the gap_z test keeps from being "overfit"
    report = scoring.evaluate_model(EvaluateParams(), Affine([2.0, -1.0]), _linear_splits(0.5), META, HISTORY)
    assert set(report) == {"task", "train", "val", "test", "baseline", "irreducible", "fit"}
    assert report["test"]["mse"] == pytest.approx(0.25, rel=0.3)
    assert report["test"]["n"] == 200
    assert report["baseline"]["test"]["r2"] < 0.05
    assert report["irreducible"] == {"mse": 0.25}
    assert report["fit"]["verdict"] == "good"
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN or inf anywhere


def test_evaluate_model_half_the_signal_is_underfit():
    report = scoring.evaluate_model(EvaluateParams(), Affine([1.0, 0.0]), _linear_splits(0.5), META, HISTORY)
    assert report["fit"]["verdict"] == "underfit"
    assert report["fit"]["noise_ratio"] > 3


def test_evaluate_model_classification():
    rng = np.random.default_rng(0)
    meta = replace(META, task="classification", classes=["no", "yes"], ground_truth=None)
    splits = {}
    for name in ("train", "val", "test"):
        x = rng.normal(size=(300, 2)).astype(np.float32)
        splits[name] = Split(x, (x[:, 0] > 0).astype(np.int64))

    class TwoLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            with torch.no_grad():
                self.lin.weight.copy_(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]))
                self.lin.bias.zero_()

        def forward(self, x):
            return self.lin(x)

    report = scoring.evaluate_model(EvaluateParams(), TwoLogits(), splits, meta, HISTORY)
    assert report["test"]["accuracy"] == 1.0 and report["test"]["roc_auc"] == 1.0
    assert report["baseline"]["test"]["accuracy"] < 0.6
    assert report["irreducible"] is None
    assert report["fit"]["verdict"] == "good"
    assert report["fit"]["skill"] == 1.0
    tables = eval_report.plot_tables("classification", splits["test"].y, scoring.predict(TwoLogits(), splits["test"].x),
                                  meta, limit=50)
    assert tables[0] == tables[1]
    assert tables[0].splitlines()[0] == "actual,predicted" and len(tables[0].splitlines()) == 51
    assert set(tables[0].splitlines()[1:]) <= {"no,no", "yes,yes"}


def test_non_finite_model_outputs_are_a_data_error():
    with pytest.raises(DataError, match="non-finite outputs on the train split"):
        scoring.evaluate_model(EvaluateParams(), Affine([float("nan"), 0.0]), _linear_splits(0.5), META, HISTORY)


def test_quantile_bins_and_sampling():
    actual = np.arange(10.0)
    a, p = eval_report.quantile_bins(actual, actual + 100)
    assert a == ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4", "q5", "q5"]
    assert p == ["q5"] * 10
    idx = eval_report.sample_rows(1000, 10)
    assert len(idx) == 10 and (np.diff(idx) > 0).all()
    assert (eval_report.sample_rows(1000, 10) == idx).all()  # seeded
    assert (eval_report.sample_rows(5, 10) == np.arange(5)).all()


def test_read_history_and_its_errors(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("epoch,train_loss,val_loss,lr,epoch_seconds\n1,2.5,3.0,0.001,0.1\n2,1.5,2.0,0.001,0.1\n")
    hist = contracts.read_history(path)
    assert hist[1] == {"epoch": 2, "train_loss": 1.5, "val_loss": 2.0, "lr": 0.001, "epoch_seconds": 0.1}
    path.write_text("epoch,train_loss,val_loss\n1,x,3\n")
    with pytest.raises(DataError, match="not a training history"):
        contracts.read_history(path)
    with pytest.raises(DataError, match="file not found"):
        contracts.read_history(tmp_path / "missing.csv")


def test_write_outputs_files_and_report(tmp_path):
    splits = _linear_splits(0.5)
    ev = scoring.evaluate_splits(EvaluateParams(plot_points=50), Affine([2.0, -1.0]), splits, META, HISTORY)
    targets = {name: split.y for name, split in splits.items()}
    evaluate.write_outputs(ev, targets, META, HISTORY, EvaluateParams(plot_points=50),
                           reports_dir=tmp_path / "reports", eval_path=tmp_path / "metrics/eval.json")
    reports = tmp_path / "reports"
    for png in ("learning_curves.png", "predictions.png"):
        assert (reports / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((reports / "predictions.csv").read_text().splitlines()) == 51
    assert (reports / "confusion.csv").read_text().splitlines()[1].startswith("q")
    md = (reports / "fit.md").read_text()
    assert md.startswith("# Fit diagnosis: **good**")
    assert "| mse |" in md and "| 0.25 |" in md  # the noise floor column
    assert json.loads((tmp_path / "metrics/eval.json").read_text())["fit"]["verdict"] == "good"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_fit_report_lists_remedies_when_not_good():
    report = scoring.evaluate_model(EvaluateParams(), Affine([1.0, 0.0]), _linear_splits(0.5), META, HISTORY)
    md = eval_report.fit_report(report, META)
    assert "**underfit**" in md and "## Remedies" in md and "more capacity" in md


# --------------------------------------------------------------- scenarios, in process

EXAMPLES = ROOT / "examples"


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def _scenario(raw: dict, tmp_path: Path) -> dict:
    from stages import generate
    from stages.core.contracts import load_meta
    from stages.data.splits import load_splits
    from stages.training.loop import train_model

    params = parse_params(raw)
    generate.run(params.data, tmp_path)
    meta = load_meta(tmp_path)
    splits = load_splits(tmp_path, meta)
    result = train_model(params.train, splits, meta)
    return scoring.evaluate_model(params.evaluate, result.model, splits, meta, result.history,
                                   restored_best=result.metrics["restored_best"])


def test_scenario_linear_model_on_friedman_is_underfit(tmp_path, one_torch_thread):
    raw = _example("underfit")
    raw["data"]["n_samples"] = 2000  # the same story on less data, to keep the default run fast
    fit = _scenario(raw, tmp_path)["fit"]
    assert fit["verdict"] == "underfit", fit["reasons"]
    assert fit["noise_ratio"] > 3


def test_scenario_large_mlp_on_few_noisy_rows_is_overfit(tmp_path, one_torch_thread):
    raw = _example("overfit")
    raw["train"]["epochs"] = min(raw["train"]["epochs"], 150)
    fit = _scenario(raw, tmp_path)["fit"]
    assert fit["verdict"] == "overfit", fit["reasons"]
    assert fit["gap"] > 1


@pytest.mark.slow  # 20000 rows: 6 s of training on an idle core, 30 s on a busy one
def test_scenario_good_example_is_good(tmp_path, one_torch_thread):
    report = _scenario(_example("good"), tmp_path)  # the full example: 20000 rows, ~6 s of training
    fit = report["fit"]
    assert fit["verdict"] == "good", fit["reasons"]
    assert fit["noise_ratio"] < 1.2 and fit["gap"] < 0.15
    assert report["test"]["mse"] < 1.25 * report["irreducible"]["mse"]


def test_examples_are_valid_full_params_files():
    current = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in ("underfit", "overfit", "good"):
        raw = _example(name)
        parse_params(raw, f"examples/{name}.yaml")
        # a full params file: every section of params.yaml is there, so copying it over loses nothing
        assert set(current) <= set(raw), (name, set(current) - set(raw))
        # and the sections it shares with params.yaml that it does not mean to change are the same
        for section in set(current) - {"data", "train"}:
            assert raw[section] == current[section], (name, section)
        # in data and train, only the lines marked `# <-` differ (examples/regenerate.py marks them)
        marked = _marked_keys(name)
        assert bool(marked) == (name != "good"), (name, marked)
        for section in ("data", "train"):
            assert set(raw[section]) == set(current[section]), (name, section)
            for key, value in current[section].items():
                if (section, key) in marked:
                    assert raw[section][key] != value, (name, f"{section}.{key} is marked but unchanged")
                else:
                    assert raw[section][key] == value, (name, f"{section}.{key}")


def _marked_keys(name: str) -> set[tuple[str, str]]:
    """(section, key) of the lines an example marks as changed with `# <-`."""
    marked, section = set(), None
    for line in (EXAMPLES / f"{name}.yaml").read_text().splitlines():
        if top := re.match(r"^(\w+):", line):
            section = top.group(1)
        elif (key := re.match(r"^  (\w+):.*# <-", line)) and section is not None:
            marked.add((section, key.group(1)))
    return marked


def test_good_example_is_the_default_params():
    # "The default params.yaml, unchanged": no line marked, every section equal to params.yaml's
    assert _marked_keys("good") == set()
    assert _example("good") == yaml.safe_load((ROOT / "params.yaml").read_text())


# --------------------------------------------------------------- scenarios, end to end


def test_stage_without_inputs_fails_with_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    proc = run_cmd([sys.executable, "-m", "stages.evaluate"], tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("fitline evaluate: error: data/meta.json: file not found")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["underfit", "overfit", "good"])
def test_example_params_give_their_verdict_with_dvc_repro(tmp_path, name, monkeypatch):
    # one intra-op thread: these small models train several times faster on a busy 2-core box
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    repo = make_pipeline_repo(tmp_path / "repo", (EXAMPLES / f"{name}.yaml").read_text())
    run_cmd(["dvc", "repro", "evaluate"], repo)
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert report["fit"]["verdict"] == name, report["fit"]
    assert (repo / "reports/fit.md").read_text().startswith(f"# Fit diagnosis: **{name}**")
    shown = run_cmd(["dvc", "metrics", "show", "metrics/eval.json"], repo).stdout
    assert "test.rmse" in shown
    plots = run_cmd(["dvc", "plots", "show", "--json"], repo).stdout
    assert "reports/predictions.csv" in plots
    shutil.rmtree(repo)


def test_test_metrics_carry_seeded_bootstrap_intervals():
    from stages.evaluation.metrics import bootstrap_ci

    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    pred = y + rng.normal(scale=0.5, size=400)
    ci = bootstrap_ci("regression", y, pred)
    mse = float(np.mean((pred - y) ** 2))
    assert ci["mse"]["low"] < mse < ci["mse"]["high"] and ci["rmse"]["low"] == pytest.approx(np.sqrt(ci["mse"]["low"]))
    se = np.std((pred - y) ** 2) / np.sqrt(400)  # the CLT's interval, for comparison
    assert ci["mse"]["high"] - ci["mse"]["low"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci("regression", y, pred) == ci  # seeded
    labels = rng.integers(0, 3, size=300)
    logits = np.eye(3)[labels] * 2 + rng.normal(size=(300, 3))
    cls = bootstrap_ci("classification", labels, logits)
    acc = float(np.mean(logits.argmax(1) == labels))
    assert cls["accuracy"]["low"] < acc < cls["accuracy"]["high"] and set(cls) == {"accuracy", "log_loss"}


def test_the_gate_names_interval_bounds():
    from stages.tools.gate_rules import lookup

    metrics = {"eval": {"test": {"r2": 0.95, "ci": {"r2": {"low": 0.93, "high": 0.96}}}}}
    assert lookup(metrics, "eval.test.r2.ci_low") == 0.93 and lookup(metrics, "eval.test.r2.ci_high") == 0.96
    assert lookup(metrics, "eval.test.r2") == 0.95


# ------------------------------------------------- the saved outputs evaluate scores (train writes)


def _saved_model(path: Path, seed: int) -> contracts.ModelConfig:
    from stages.training.models import build_model, save_model
    from tests.conftest import model_config

    cfg = model_config()
    torch.manual_seed(seed)
    save_model(path, build_model(cfg), cfg)
    return cfg


def _data_files(data_dir: Path) -> Path:
    """Stand-ins for the split files and meta.json: the outputs file binds to their bytes."""
    data_dir.mkdir()
    for name in ("train.parquet", "val.parquet", "test.parquet", "meta.json"):
        (data_dir / name).write_text(name)
    return data_dir


def test_saved_outputs_round_trip_with_the_same_bytes(tmp_path):
    cfg, data = _saved_model(tmp_path / "model.pt", 0), _data_files(tmp_path / "data")
    outputs = {"train": np.linspace(0, 1, 7), "val": np.arange(3.0), "test": np.empty((0,))}
    targets = {"train": np.arange(7, dtype=np.float32), "val": np.ones(3, np.float32), "test": np.empty(0, np.float32)}
    dest = tmp_path / "outputs.npz"
    contracts.write_model_outputs(outputs, targets, cfg, tmp_path / "model.pt", data, dest)
    first = dest.read_bytes()
    contracts.write_model_outputs(outputs, targets, cfg, tmp_path / "model.pt", data, dest)
    assert dest.read_bytes() == first  # DVC sees no change when neither model nor data changed
    saved = contracts.read_model_outputs(dest, tmp_path / "model.pt", data)
    assert saved.config == cfg and saved.outputs.keys() == outputs.keys() == saved.targets.keys()
    for name, out in outputs.items():
        assert saved.outputs[name].dtype == np.float64 and np.array_equal(saved.outputs[name], out)
        assert saved.targets[name].dtype == np.float32 and np.array_equal(saved.targets[name], targets[name])


def test_saved_outputs_of_another_model_or_data_are_refused_naming_the_fix(tmp_path):
    cfg, data = _saved_model(tmp_path / "model.pt", 0), _data_files(tmp_path / "data")
    dest = tmp_path / "outputs.npz"
    contracts.write_model_outputs({"train": np.zeros(2)}, {"train": np.zeros(2)}, cfg, tmp_path / "model.pt", data,
                                  dest)
    (data / "test.parquet").write_text("regenerated")  # generate ran again, train did not
    with pytest.raises(DataError, match=r"on other data than .*data/ holds now \(run `dvc repro train`\)"):
        contracts.read_model_outputs(dest, tmp_path / "model.pt", data)
    (data / "test.parquet").write_text("test.parquet")
    contracts.read_model_outputs(dest, tmp_path / "model.pt", data)
    _saved_model(tmp_path / "model.pt", 1)  # retrained by hand: other weights, other bytes
    with pytest.raises(DataError, match=r"another .*model.pt.*run `dvc repro train`"):
        contracts.read_model_outputs(dest, tmp_path / "model.pt", data)
    dest.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable outputs file.*dvc repro train"):
        contracts.read_model_outputs(dest, tmp_path / "model.pt", data)
    with pytest.raises(DataError, match=r"missing.npz: file not found \(run `dvc repro train`\)"):
        contracts.read_model_outputs(tmp_path / "missing.npz", tmp_path / "model.pt", data)


def test_outputs_for_other_rows_are_a_data_error():
    outputs = {"train": np.zeros(4), "val": np.zeros(3)}
    targets = {"train": np.zeros(4, np.float32), "val": np.zeros(2, np.float32)}
    with pytest.raises(DataError, match=r"3 model outputs for the 2 rows of the val split \(run `dvc repro train`\)"):
        scoring.score_outputs(EvaluateParams(), outputs, targets, META, HISTORY)
