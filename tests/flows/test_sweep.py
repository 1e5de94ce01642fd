"""Sweeps: the grid, trial params, ranking and --apply on crafted inputs; the fitline-sweep flow on
tiny generated data against the session's Prefect test server (threads, Dask, processes)."""

from __future__ import annotations

import csv
import difflib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from flows.sweep import RunOptions, cache_storage, leaderboard_text, run_sweep, sweep_flow
from stages import generate
from stages.core.contracts import data_fingerprint
from stages.core.errors import DataError, FitlineError, ParamsError
from stages.core.params import EvaluateParams, TrainParams, parse_params
from stages.tools.sweep import (
    apply_best,
    apply_overrides,
    check_validated,
    grid_trials,
    leaderboard_csv,
    leaderboard_rows,
    rank_trials,
    trial_key,
    trial_params,
)

ROOT = Path(__file__).resolve().parents[2]

# a params.yaml with comments, as a user keeps it; tiny data and training
PARAMS_TEXT = """\
# tiny params for the sweep tests
data:
  kind: friedman
  n_samples: 400         # rows in all
  seed: 3

train:
  hidden: [8]            # one small layer
  optimizer: adam        # the optimizer
  lr: 0.001
  epochs: 4
  batch_size: 64
  early_stopping: {patience: null, min_delta: 0.0}   # train every epoch

# the grid under test
sweep:
  grid:
    optimizer: [adam, sgd]
    lr: [0.003, 0.03]
  workers: 2
  compare:
    optimizers: [sgd, adam]
    lrs: {sgd: [0.01, 0.1], adam: [0.003, 0.03]}
    epochs: 4
"""


def make_workspace(dest: Path, params_text: str = PARAMS_TEXT, validated: bool = True) -> Path:
    """params.yaml, generated data/ and (crafted) reports/validation.json: what `dvc repro validate`
    leaves; the validation itself is tested by the validate stage's tests and the slow CLI test."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text(params_text)
    generate.run(parse_params(yaml.safe_load(params_text)).data, dest / "data")
    if validated:
        (dest / "reports").mkdir(exist_ok=True)
        (dest / "reports" / "validation.json").write_text(json.dumps({"success": True}))
    return dest


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory, prefect_server):
    """A workspace whose 2x2 grid ran once (later runs of it are cache hits), and that run."""
    ws = make_workspace(tmp_path_factory.mktemp("sweep") / "ws")
    return ws, run_sweep(ws)


@pytest.fixture
def swept(first_sweep) -> Path:
    return first_sweep[0]


def ok_trial(val: float, seconds: float = 1.0, **params) -> dict:
    return {"status": "ok", "error": None, "task": "regression", "loss": "mse", "params": params,
            "val": {"mse": val, "rmse": val ** 0.5, "mae": 0.0, "r2": 0.5},
            "test": {"mse": val + 1, "rmse": 0.0, "mae": 0.0, "r2": 0.4},
            "verdict": "good", "epochs": 3, "seconds": seconds, "history": []}


def failed_trial(**params) -> dict:
    return {"status": "failed", "error": "training diverged", "task": "regression", "loss": "mse", "params": params}


# ----------------------------------------------------------------------- decision logic


def test_grid_is_every_combination_first_key_slowest():
    assert grid_trials({"optimizer": ["adam", "sgd"], "lr": [0.1, 0.2]}) == [
        {"optimizer": "adam", "lr": 0.1}, {"optimizer": "adam", "lr": 0.2},
        {"optimizer": "sgd", "lr": 0.1}, {"optimizer": "sgd", "lr": 0.2}]
    assert grid_trials({}) == [{}]


def test_trial_params_are_validated_like_params_yaml():
    base = TrainParams(lr=0.002)
    p = trial_params(base, {"lr": 0.05, "hidden": [32, 16], "early_stopping.patience": None})
    assert (p.lr, p.hidden, p.early_stopping.patience) == (0.05, (32, 16), None)
    assert base.lr == 0.002  # the base is untouched
    with pytest.raises(ParamsError, match=r"lr=-1: train\.lr: -1 is not allowed"):
        trial_params(base, {"lr": -1})
    with pytest.raises(ParamsError, match=r"train\.optimizer: 'adm' is not allowed"):
        trial_params(base, {"optimizer": "adm"})
    # a combination rule of TrainParams names its key too
    with pytest.raises(ParamsError, match=r"train\.weight_decay: 0\.1 is decoupled decay for optimizer 'adamw' only"):
        trial_params(base, {"weight_decay": 0.1})


def test_sweep_params_reject_unknown_keys_and_empty_values():
    with pytest.raises(ParamsError, match=r"sweep\.grid: unknown train key 'learning_rate' \(allowed: .*lr"):
        parse_params({"sweep": {"grid": {"learning_rate": [0.1]}}})
    with pytest.raises(ParamsError, match=r"sweep\.grid\.lr: no values"):
        parse_params({"sweep": {"grid": {"lr": []}}})
    with pytest.raises(ParamsError, match=r"sweep\.compare\.lrs\.adam"):
        parse_params({"sweep": {"compare": {"lrs": {"adam": [0.0]}}}})
    assert parse_params({"sweep": {"grid": {"early_stopping.patience": [None, 5]}}}).sweep.grid


def test_ranking_by_val_loss_failed_last_ties_to_the_faster():
    trials = [ok_trial(3.0, lr=1), failed_trial(lr=2), ok_trial(1.0, seconds=5.0, lr=3),
              ok_trial(1.0, seconds=2.0, lr=4), ok_trial(2.0, lr=5)]
    assert [t["params"]["lr"] for t in rank_trials(trials)] == [4, 3, 5, 1, 2]


def test_leaderboard_rows_and_csv():
    ranked = rank_trials([ok_trial(2.0, optimizer="sgd", hidden=[8, 8]), ok_trial(1.0, optimizer="adam", hidden=None),
                          failed_trial(optimizer="gd", hidden=[4])])
    rows = leaderboard_rows(ranked, ["optimizer", "hidden"])
    assert [(r["rank"], r["optimizer"], r["hidden"], r["status"]) for r in rows] == [
        (1, "adam", "null", "ok"), (2, "sgd", "[8, 8]", "ok"), (3, "gd", "[4]", "failed")]
    assert rows[0]["val_mse"] == 1.0 and rows[0]["test_mse"] == 2.0 and rows[2]["val_mse"] is None
    parsed = list(csv.DictReader(leaderboard_csv(rows).splitlines()))
    assert list(parsed[0])[:4] == ["rank", "optimizer", "hidden", "val_mse"]
    assert parsed[2]["val_mse"] == "" and parsed[2]["error"] == "training diverged"


def test_check_validated(tmp_path):
    with pytest.raises(DataError, match=r"not found.*dvc repro validate"):
        check_validated(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "validation.json").write_text(json.dumps({"success": False}))
    with pytest.raises(DataError, match=r"failed validation.*dvc repro validate"):
        check_validated(tmp_path)
    (tmp_path / "reports" / "validation.json").write_text(json.dumps({"success": True}))
    check_validated(tmp_path)


def test_trial_key_follows_params_data_and_not_checkpointing(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    data = data_fingerprint(ws / "data")
    base, ev = TrainParams(device="cpu"), EvaluateParams()
    key = trial_key(base, ev, data, "code")
    assert key == trial_key(base.model_copy(update={"checkpoint_every": 3}), ev, data, "code")
    assert key != trial_key(trial_params(base, {"lr": 0.01}), ev, data, "code")
    assert key != trial_key(base, EvaluateParams(overfit_gap=0.5), data, "code")
    assert key != trial_key(base, ev, data, "other code")
    with (ws / "data" / "meta.json").open("a") as f:
        f.write("\n")
    assert data_fingerprint(ws / "data") != data


# -------------------------------------------------------------------------------- --apply


def _changed_lines(before: str, after: str) -> list[str]:
    return [ln for ln in difflib.ndiff(before.splitlines(), after.splitlines()) if ln[:2] in ("- ", "+ ")]


def test_apply_keeps_the_project_params_yaml_byte_for_byte_but_the_keys():
    text = (ROOT / "params.yaml").read_text()
    assert apply_overrides(text, {}) == text  # round trip: comments, order, nulls, flow lists
    new = apply_overrides(text, {"optimizer": "sgd", "lr": 1e-05, "early_stopping.patience": None})
    changed = _changed_lines(text, new)
    assert len(changed) == 6, changed  # 3 lines out, 3 in
    out = {ln[2:].split(":")[0].strip(): ln for ln in changed if ln[0] == "-"}
    into = {ln[2:].split(":")[0].strip(): ln for ln in changed if ln[0] == "+"}
    assert set(out) == set(into) == {"optimizer", "lr", "early_stopping"}
    for key in out:  # each line keeps its comment
        assert out[key].partition("#")[2] == into[key].partition("#")[2]
    assert into["optimizer"].startswith("+   optimizer: sgd ")
    assert into["lr"].startswith("+   lr: 1.0e-05")  # PyYAML (YAML 1.1) would read 1e-05 as a string
    train = yaml.safe_load(new)["train"]
    assert (train["lr"], train["early_stopping"]["patience"], train["early_stopping"]["min_delta"]) == (1e-05, None, 0.0)


def test_apply_best_writes_only_changed_keys_and_refuses_invalid(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_TEXT)
    changed = apply_best(path, {"optimizer": "sgd", "lr": 0.03, "hidden": [16, 16]})
    assert changed == {"optimizer": ("adam", "sgd"), "lr": (0.001, 0.03), "hidden": ([8], [16, 16])}
    text = path.read_text()
    assert "  hidden: [16, 16]       # one small layer" in text
    assert "  optimizer: sgd         # the optimizer" in text
    assert "# the grid under test" in text and "    lr: [0.003, 0.03]" in text  # the sweep section is kept
    assert len(_changed_lines(PARAMS_TEXT, text)) == 6
    assert apply_best(path, {"optimizer": "sgd"}) == {}  # already there: nothing to write
    with pytest.raises(ParamsError, match=r"train\.lr"):
        apply_best(path, {"lr": -1.0})
    assert path.read_text() == text


# ------------------------------------------------------------------------------ the flow


def _task_run_states(flow_run_id, count: int, timeout: float = 30.0) -> list[str]:
    """The final states of a flow run's task runs, as the API has them. Task run states reach the
    server through Prefect's event stream, a moment after the flow returns: poll (bounded)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            states = sorted(r.state.name for r in runs if r.state is not None)
            if (len(states) == count and all(r.state.is_final() for r in runs)) or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


def test_2x2_grid_leaderboard_then_a_rerun_is_all_cache_hits(first_sweep):
    swept, first = first_sweep
    assert len(first.trials) == 4 and not any(t["cached"] for t in first.trials)
    losses = [t["val"]["mse"] for t in first.trials]
    assert losses == sorted(losses) and all(t["status"] == "ok" for t in first.trials)
    rows = list(csv.DictReader((swept / "reports" / "sweep.csv").read_text().splitlines()))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r["val_mse"]) for r in rows] == losses
    assert {(r["optimizer"], r["lr"]) for r in rows} == {("adam", "0.003"), ("adam", "0.03"),
                                                        ("sgd", "0.003"), ("sgd", "0.03")}
    assert set(rows[0]) >= {"test_mse", "test_r2", "verdict", "epochs", "seconds"}
    assert rows[0]["epochs"] == "4"
    assert "best: " + f"optimizer={rows[0]['optimizer']},lr={rows[0]['lr']}" in leaderboard_text(first)

    # the same grid again: every trial is a cache hit, by the API's own account
    options = RunOptions.resolve(parse_params(yaml.safe_load(PARAMS_TEXT)))
    state = sweep_flow.with_options(task_runner=options.task_runner())(root=str(swept), return_state=True)
    assert _task_run_states(state.state_details.flow_run_id, 4) == ["Cached"] * 4
    again = state.result()
    assert all(t["cached"] for t in again)
    assert [(t["params"], t["val"], t["seconds"]) for t in again] == \
        [(t["params"], t["val"], t["seconds"]) for t in first.trials]


def test_a_cache_hit_from_another_grid_keeps_this_grids_keys(swept, prefect_server):
    # base train params are adam at lr 0.001: {lr: 0.003} here is the 2x2 grid's adam/0.003 trial
    result = run_sweep(swept, grid={"lr": [0.003]})
    assert result.trials[0]["cached"] and result.trials[0]["params"] == {"lr": 0.003}
    assert result.rows[0]["lr"] == "0.003" and "optimizer" not in result.rows[0]


def test_table_artifact_holds_the_leaderboard(swept, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    result = run_sweep(swept)
    with get_client(sync_client=True) as client:
        art = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fitline-sweep"])))
    table = json.loads(art[0].data)
    assert [r["rank"] for r in table] == [1, 2, 3, 4]
    assert table[0]["optimizer"] == result.rows[0]["optimizer"] and "best: " in art[0].description


def test_apply_writes_the_best_into_params_yaml(swept, tmp_path, prefect_server):
    ws = tmp_path / "ws"
    shutil.copytree(swept, ws)  # the cache comes along: no training here
    result = run_sweep(ws, apply=True)
    assert all(t["cached"] for t in result.trials)
    best = result.best["params"]
    train = yaml.safe_load((ws / "params.yaml").read_text())["train"]
    assert (train["optimizer"], train["lr"]) == (best["optimizer"], best["lr"])
    text = (ws / "params.yaml").read_text()
    assert "# tiny params for the sweep tests" in text and "# one small layer" in text
    assert all(ln[2:].strip().startswith(("optimizer:", "lr:")) for ln in _changed_lines(PARAMS_TEXT, text))


def test_a_diverging_trial_is_ranked_last_not_fatal(tmp_path, prefect_server):
    ws = make_workspace(tmp_path / "ws", PARAMS_TEXT.replace("lr: [0.003, 0.03]", "lr: [0.003, 100.0]"))
    result = run_sweep(ws, grid={"optimizer": ["sgd"], "lr": [0.003, 100.0]}, workers=1)
    assert [t["status"] for t in result.trials] == ["ok", "failed"]
    assert "diverged" in result.trials[1]["error"]
    assert result.rows[1]["status"] == "failed" and result.best["params"]["lr"] == 0.003
    with pytest.raises(FitlineError, match=r"every trial failed \(the first: training diverged"):
        run_sweep(ws, grid={"optimizer": ["sgd"], "lr": [100.0]}, apply=True)
    assert (ws / "params.yaml").read_text() == PARAMS_TEXT.replace("lr: [0.003, 0.03]", "lr: [0.003, 100.0]")


def test_bad_grid_and_unvalidated_data_fail_before_any_run(tmp_path):
    ws = make_workspace(tmp_path / "ws", PARAMS_TEXT.replace("lr: [0.003, 0.03]", "lr: [0.003, -1]"))
    with pytest.raises(ParamsError, match=r"optimizer=adam,lr=-1: train\.lr: -1 is not allowed"):
        run_sweep(ws)
    ws2 = make_workspace(tmp_path / "ws2", validated=False)
    with pytest.raises(DataError, match="dvc repro validate"):
        run_sweep(ws2)
    with pytest.raises(ParamsError, match="unknown runner 'mpi'"):
        run_sweep(ws2, runner="mpi")
    assert not cache_storage(ws).exists()


def test_dask_runner_on_a_local_cluster(swept, prefect_server):
    result = run_sweep(swept, grid={"optimizer": ["adam"], "lr": [0.003, 0.01]}, runner="dask", dask_processes=False)
    assert [t["status"] for t in result.trials] == ["ok", "ok"]
    # lr 0.003 is the threads run's trial: the same cache, whatever the runner
    assert {t["params"]["lr"]: t["cached"] for t in result.trials} == {0.003: True, 0.01: False}


def test_dask_runner_on_an_existing_scheduler(swept, prefect_server):
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Finished(SchedulerPlugin):
        def __init__(self):
            self.keys = []

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "memory":
                self.keys.append(key)

    finished = Finished()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        cluster.scheduler.add_plugin(finished)
        result = run_sweep(swept, grid={"optimizer": ["sgd"], "lr": [0.003, 0.02]}, workers=1,
                           dask_address=cluster.scheduler_address)
    assert len(finished.keys) == 2  # both trials ran on that cluster (one of them a cache hit)
    assert [t["status"] for t in result.trials] == ["ok", "ok"]
    assert {t["params"]["lr"]: t["cached"] for t in result.trials} == {0.003: True, 0.02: False}


@pytest.mark.slow
def test_process_pool_runner(swept, prefect_server):
    result = run_sweep(swept, grid={"optimizer": ["sgd"], "lr": [0.003, 0.005]}, runner="processes")
    assert {t["params"]["lr"]: t["cached"] for t in result.trials} == {0.003: True, 0.005: False}
    assert all(t["status"] == "ok" for t in result.trials)
