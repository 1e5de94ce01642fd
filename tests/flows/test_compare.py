"""The optimizer comparison: plan, best learning rate, target and time-to-target on crafted
trials; `fitline compare` (and `fitline sweep`) end to end through the CLI on tiny data."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from flows.cli import app
from stages.core.params import CompareParams, TrainParams
from stages.tools.compare import best_per_optimizer, compare, compare_plan, grid_edge, reach, target_value
from tests.flows.test_sweep import PARAMS_TEXT, make_workspace


def trial(opt: str, lr: float, val: float | None, curve: list[float] | None = None, verdict: str = "good") -> dict:
    if val is None:
        return {"status": "failed", "error": "diverged", "task": "regression", "loss": "mse",
                "params": {"optimizer": opt, "lr": lr}}
    curve = curve or [val]
    history = [{"epoch": i + 1, "train_loss": v, "val_loss": v, "seconds": 0.5 * (i + 1)} for i, v in enumerate(curve)]
    return {"status": "ok", "error": None, "task": "regression", "loss": "mse", "params": {"optimizer": opt, "lr": lr},
            "val": {"mse": val}, "test": {"mse": val}, "verdict": verdict, "epochs": len(curve),
            "seconds": 0.5 * len(curve), "history": history}


def test_plan_every_optimizer_at_its_lrs_same_epochs_no_early_stopping():
    cp = CompareParams(optimizers=("sgd", "adamw"), lrs={"sgd": (0.1,)}, epochs=7, weight_decay=0.05)
    plan = compare_plan(TrainParams(), cp)
    assert [(o["optimizer"], o["lr"]) for o in plan] == [("sgd", 0.1), ("adamw", 0.0003), ("adamw", 0.001),
                                                         ("adamw", 0.003)]
    assert {o["epochs"] for o in plan} == {7} and {o["early_stopping.patience"] for o in plan} == {None}
    assert [o["weight_decay"] for o in plan] == [0.0, 0.05, 0.05, 0.05]  # decoupled decay is adamw's alone
    assert compare_plan(TrainParams(epochs=12), CompareParams(optimizers=("gd",), epochs=None))[0]["epochs"] == 12
    assert len(compare_plan(TrainParams(), CompareParams())) == 24  # 8 optimizers x 3 learning rates


def test_best_lr_target_and_time_to_target():
    trials = [trial("sgd", 0.01, 2.0, [4.0, 3.0, 2.0]), trial("sgd", 0.1, 1.5, [3.0, 1.6, 1.5]),
              trial("adam", 0.001, 1.0, [2.0, 1.05, 1.0]), trial("adam", 0.01, None),
              trial("gd", 1.0, None)]
    kept = best_per_optimizer(trials, ["sgd", "adam", "gd"])
    assert {k: v["params"]["lr"] for k, v in kept.items()} == {"sgd": 0.1, "adam": 0.001, "gd": 1.0}
    assert kept["gd"]["status"] == "failed"
    assert target_value(kept, CompareParams()) == (pytest.approx(1.1), "1.1 x the best final val loss")
    assert target_value(kept, CompareParams(target_loss=1.6)) == (1.6, "compare.target_loss")
    assert reach(kept["adam"]["history"], 1.1) == (2, 1.0)
    assert reach(kept["sgd"]["history"], 1.1) == (None, None)
    assert reach(kept["sgd"]["history"], 1.6) == (2, 1.0)  # "at or below"

    c = compare(trials, CompareParams(optimizers=("sgd", "adam", "gd")))
    assert [r["optimizer"] for r in c.rows] == ["adam", "sgd", "gd"]  # best final val loss first, failures last
    adam, sgd, gd = c.rows
    assert (adam["lr"], adam["final_val_mse"], adam["epochs_to_target"], adam["seconds_to_target"]) == (0.001, 1.0, 2, 1.0)
    assert (sgd["epochs_to_target"], sgd["best_val_mse"]) == (None, 1.5)
    assert (gd["verdict"], gd["lr"], gd["lrs_tried"]) == ("failed", None, "1 (1 failed)")
    assert adam["lrs_tried"] == "0.001 0.01 (1 failed)"
    assert len(c.notes) == 1 and c.notes[0].startswith("sgd: the best lr (0.1) is the largest tried")


def test_grid_edge():
    low, mid, high, over = trial("x", 0.01, 2.0), trial("x", 0.03, 1.0), trial("x", 0.1, 1.5), trial("x", 0.3, None)
    assert grid_edge(mid, [low, mid, high]) is None
    assert grid_edge(low, [low, mid, high]) == "smallest"
    assert grid_edge(high, [low, mid, high]) == "largest"
    assert grid_edge(high, [low, mid, high, over]) is None  # a larger lr diverged: the edge is known
    assert grid_edge(mid, [mid]) is None and grid_edge(over, [over]) is None


def test_cli_compare_writes_chart_table_and_curves(tmp_path, prefect_server):
    ws = make_workspace(tmp_path / "ws")
    result = CliRunner().invoke(app, ["compare", "--root", str(ws)])
    assert result.exit_code == 0, result.output
    reports = ws / "reports"
    assert (reports / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (reports / "compare.md").read_text()
    assert "| optimizer | lr | final_val_mse |" in table and "Target val MSE" in table
    assert table.count("| sgd |") == 1 and table.count("| adam |") == 1
    assert "| optimizer | lr | final_val_mse |" in result.output and "0 of 4 trials from cache" in result.output
    rows = list(csv.DictReader((reports / "compare.csv").read_text().splitlines()))
    assert list(rows[0]) == ["optimizer", "lr", "epoch", "seconds", "train_loss", "val_loss"]
    assert len(rows) == 2 * 4  # the best run of each of the 2 optimizers, 4 epochs each
    assert {r["optimizer"] for r in rows} == {"sgd", "adam"}

    again = CliRunner().invoke(app, ["compare", "--root", str(ws)])
    assert again.exit_code == 0 and "4 of 4 trials from cache" in again.output


def test_cli_sweep_apply_and_errors(tmp_path, prefect_server):
    ws = make_workspace(tmp_path / "ws")
    result = CliRunner().invoke(app, ["sweep", "--root", str(ws), "--apply", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "| rank | optimizer | lr | val_mse |" in result.output and "best: optimizer=" in result.output
    assert "run `dvc repro` to train the official model" in result.output
    assert (ws / "reports" / "sweep.csv").exists()

    bad = make_workspace(tmp_path / "bad", PARAMS_TEXT.replace("optimizer: [adam, sgd]", "optimizer: [adam, foo]"))
    result = CliRunner().invoke(app, ["sweep", "--root", str(bad)])
    assert result.exit_code == 1
    assert "fitline sweep: error: " in result.output and "train.optimizer: 'foo' is not allowed" in result.output
    unvalidated = make_workspace(tmp_path / "raw", validated=False)
    result = CliRunner().invoke(app, ["compare", "--root", str(unvalidated)])
    assert result.exit_code == 1 and "run `dvc repro validate` first" in result.output
