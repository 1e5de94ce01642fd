"""Structured pruning before export: unit ranking, the smaller model, the exported graph, the
accuracy budget, and what metrics/export.json and the gate see."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError

from stages import generate
from stages.core.contracts import ModelConfig
from stages.core.errors import ExportError
from stages.core.params import DataParams, ExportParams, PruneParams, TrainParams
from stages.data.splits import load_splits
from stages.serving import onnx as onnx_export
from stages.tools.gate_rules import evaluate_rules, lookup, parse_threshold
from stages.training.loop import train_model
from stages.training.models import build_model
from stages.training.pruning import prune_model, unit_scores, units_to_keep

TRAIN = TrainParams(hidden=(32, 32), epochs=60, batch_size=128, lr=0.01, device="cpu",
                    early_stopping={"patience": None})
PRUNE = ExportParams(quantization="dynamic", latency_repeats=3, max_metric_drop=0.02,
                     prune={"amount": 0.5, "fine_tune_epochs": 20})
# what metrics/export.json held before pruning existed: pruning off must leave exactly these
UNPRUNED_KEYS = {"quantization", "int8_is_fp32_copy", "opset", "task", "metric_name", "test_metric", "metric_drop",
                 "parity_max_abs", "parity_max_scaled", "parity_output", "test_rows", "size_fp32_bytes",
                 "size_int8_bytes", "size_ratio", "latency_ms", "latency_repeats", "latency_threads"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """An over-wide MLP on an easy (linear) regression: (model, cfg, splits)."""
    tmp = tmp_path_factory.mktemp("prune")
    meta = generate.run(DataParams(kind="linear", n_samples=800, n_features=5, n_informative=3, noise=0.5, seed=1),
                        tmp / "data")
    splits = load_splits(tmp / "data", meta)
    result = train_model(TRAIN, splits, meta)
    return result.model, result.config, splits


@pytest.fixture(scope="module")
def pruned_export(trained, tmp_path_factory):
    model, cfg, splits = trained
    out = tmp_path_factory.mktemp("pruned") / "models"
    metrics = onnx_export.export_model(PRUNE, model, cfg, splits, out, train_params=TRAIN)
    return out, metrics


def _cfg(hidden: list[int], n_features: int = 3) -> ModelConfig:
    return ModelConfig.from_dict({
        "task": "regression", "feature_names": [f"x{i}" for i in range(n_features)], "target": "y", "classes": None,
        "n_features": n_features, "n_outputs": 1, "model": "mlp", "hidden": hidden, "activation": "relu",
        "dropout": 0.0, "scaling": "standard"})


def _matrix_shapes(path: Path) -> list[tuple[int, ...]]:
    proto = onnx.load(str(path))
    return sorted(tuple(i.dims) for i in proto.graph.initializer if len(i.dims) == 2)


# --------------------------------------------------------------------------- ranking


def test_l1_and_l2_rank_units_by_their_incoming_weights():
    # unit 0: one large weight; unit 1: three moderate ones; unit 2: large everywhere
    w = torch.tensor([[2.0, 0.0, 0.0], [0.9, -0.9, 0.9], [3.0, 3.0, -3.0]])
    assert unit_scores(w, "l1").tolist() == pytest.approx([2.0, 2.7, 9.0])
    assert unit_scores(w, "l2").tolist() == pytest.approx([2.0, np.sqrt(3 * 0.81), np.sqrt(27)])
    # one unit of three goes: l1 drops unit 0 (2 < 2.7), l2 drops unit 1 (1.56 < 2)
    assert units_to_keep(w, 1 / 3, "l1").tolist() == [1, 2]
    assert units_to_keep(w, 1 / 3, "l2").tolist() == [0, 2]
    # round(0.9 * 3) = 3 would remove all: one unit always stays, the strongest
    assert units_to_keep(w, 0.9, "l1").tolist() == [2]
    assert units_to_keep(w, 0.0, "l2").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"export\.prune\.criterion: unknown criterion 'l3' \(allowed: l1, l2\)"):
        unit_scores(w, "l3")


def test_pruned_model_computes_what_the_original_does_with_those_units_silenced():
    torch.manual_seed(0)
    cfg = _cfg([6, 4])
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.x_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        model.x_std.copy_(torch.tensor([2.0, 3.0, 0.5]))
        model.y_mean.fill_(10.0)
        model.y_std.fill_(4.0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-zero biases too
    small, small_cfg = prune_model(model, cfg, 0.5, "l2")
    assert small_cfg.hidden == [3, 2] and cfg.hidden == [6, 4]
    assert [p.shape for p in small.net.parameters()] == [(3, 3), (3,), (2, 3), (2,), (1, 2), (1,)]
    for name in ("x_mean", "x_std", "y_mean", "y_std"):  # the scaling buffers come along
        assert torch.equal(getattr(small, name), getattr(model, name))
    # the original with the removed units' weights and biases zeroed is the same function
    masked = build_model(cfg).eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        keep1 = units_to_keep(model.net[0].weight, 0.5, "l2")
        keep2 = units_to_keep(model.net[2].weight, 0.5, "l2")
        for layer, keep in ((masked.net[0], keep1), (masked.net[2], keep2)):
            drop = torch.ones(layer.out_features, dtype=torch.bool)
            drop[keep] = False
            layer.weight[drop] = 0.0
            layer.bias[drop] = 0.0
    x = torch.randn(50, 3) * 3
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)


def test_prune_params_default_off_and_bounds():
    assert ExportParams().prune == PruneParams(amount=0.0, fine_tune_epochs=5, criterion="l1")
    with pytest.raises(ValidationError):
        PruneParams(amount=1.0)
    with pytest.raises(ValidationError, match="'l1' or 'l2'"):
        PruneParams(criterion="l3")


# --------------------------------------------------------------------------- export


def test_amount_half_halves_each_hidden_layer_in_the_served_onnx(trained, pruned_export):
    out, metrics = pruned_export
    _, cfg, _ = trained
    assert cfg.hidden == [32, 32]
    shapes = _matrix_shapes(out / "model.onnx")
    dims = {d for s in shapes for d in s}
    assert 32 not in dims and 16 in dims, shapes  # 5 -> 16 -> 16 -> 1
    assert sum(np.prod(s) for s in shapes) == 5 * 16 + 16 * 16 + 16 * 1
    # int8 sits on the pruned graph: its quantised weights have the pruned shapes too
    int8_dims = {d for s in _matrix_shapes(out / "model.int8.onnx") for d in s}
    assert 32 not in int8_dims
    p = metrics["pruning"]
    assert p["hidden_before"] == [32, 32] and p["hidden_after"] == [16, 16]
    assert p["params_before"] == 5 * 32 + 32 + 32 * 32 + 32 + 32 + 1
    assert p["params_after"] == 5 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert p["size_bytes"]["pruned_fp32"] < p["size_bytes"]["fp32"]
    assert p["size_bytes"]["pruned_fp32"] == metrics["size_fp32_bytes"]  # the served model is the pruned one


def test_pruned_export_passes_parity_and_stays_within_budget(pruned_export):
    _, metrics = pruned_export
    assert metrics["parity_max_scaled"] <= 1.0
    p = metrics["pruning"]
    assert p["metric_drop"] == pytest.approx(p["test_metric_before"] - p["test_metric_after"])
    assert p["metric_drop"] <= PRUNE.max_metric_drop
    assert p["test_metric_after"] == pytest.approx(metrics["test_metric"]["torch"])
    assert metrics["metric_drop"] <= PRUNE.max_metric_drop  # int8 on top of the pruned model
    assert set(p["latency_ms"]) == {"fp32", "pruned_fp32", "int8", "pruned_int8"}
    for per_batch in p["latency_ms"].values():
        assert set(per_batch) == {"batch_1", "batch_1024"} and all(v > 0 for v in per_batch.values())
    assert set(p["speedup"]) == {"fp32", "int8"}
    assert set(metrics["latency_ms"]) == {"torch_eager", "onnx_fp32", "onnx_int8"}  # unchanged shape


def test_pruning_over_budget_names_the_amount_and_keeps_the_models(trained, pruned_export, tmp_path):
    model, cfg, splits = trained
    out = tmp_path / "models"
    out.mkdir()
    for name in ("model.onnx", "model.int8.onnx"):
        shutil.copyfile(pruned_export[0] / name, out / name)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    params = ExportParams(latency_repeats=1, max_metric_drop=1e-6, prune={"amount": 0.9, "fine_tune_epochs": 1})
    with pytest.raises(ExportError, match=r"^pruned model \(hidden \[32, 32\] -> \[3, 3\]\) test r2 .* over "
                       r"export\.max_metric_drop 1e-06; lower export\.prune\.amount \(now 0\.9\)$") as err:
        onnx_export.export_model(params, model, cfg, splits, out, train_params=TRAIN)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, no temp files left


def test_pruning_needs_train_and_val(trained, tmp_path):
    model, cfg, splits = trained
    with pytest.raises(Exception, match=r"export\.prune\.amount 0\.5: .* needs the val split"):
        onnx_export.export_model(PRUNE, model, cfg, {k: splits[k] for k in ("train", "test")}, tmp_path,
                                 train_params=TRAIN)
    assert not list(tmp_path.iterdir())


def test_prune_off_keeps_the_metrics_keys_and_needs_only_test(trained, tmp_path):
    model, cfg, splits = trained
    metrics = onnx_export.export_model(ExportParams(latency_repeats=1), model, cfg, {"test": splits["test"]}, tmp_path)
    assert set(metrics) == UNPRUNED_KEYS
    assert {d for s in _matrix_shapes(tmp_path / "model.onnx") for d in s} >= {32}


# --------------------------------------------------------------------------- gate


def test_gate_rules_address_the_pruning_figures(pruned_export):
    metrics = {"export": pruned_export[1]}
    assert lookup(metrics, "export.pruning.metric_drop") == pruned_export[1]["pruning"]["metric_drop"]
    assert lookup(metrics, "export.pruning.hidden_after.0") == 16
    rules = [parse_threshold("export.pruning.metric_drop <= 0.02"),
             parse_threshold("export.pruning.params_ratio < 0.5"),
             parse_threshold("export.pruning.metric_drop <= -1"),
             parse_threshold("export.pruning.latency_ms.pruned_int8.batch_1024 > 0")]
    result = evaluate_rules(rules, metrics)
    assert [r.status for r in result.rows] == ["pass", "pass", "fail", "pass"]
    # with pruning off the figures are absent: the gate cannot judge (rather than passing)
    off = evaluate_rules(rules[:1], {"export": {k: v for k, v in pruned_export[1].items() if k != "pruning"}})
    assert off.rows[0].status == "error" and "no 'pruning' in export" in off.rows[0].detail
