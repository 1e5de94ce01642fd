"""`fitline tune` end to end on tiny generated data against the session's Prefect test server:
the leaderboard, a rerun that trains nothing, a continued study, pruned trials kept out of the
trial cache, --apply, and bad input refused in one line before anything runs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.sweep import cache_storage, load_trial_data, run_sweep
from flows.tune import run_tune, tune_trial_task
from stages.core.params import parse_params
from stages.tools.sweep import code_fingerprint, trial_key, trial_params
from stages.tools.tune import pruning_trial
from tests.flows.test_sweep import PARAMS_TEXT, _changed_lines, make_workspace

# the sweep tests' tiny params, with a tune section: a log range and a choice of layer sizes
TUNE_PARAMS = PARAMS_TEXT.replace("  epochs: 4\n", "  epochs: 6\n") + """
# the study under test
tune:
  trials: 3
  startup_trials: 2      # random trials before TPE
  warmup_epochs: 2
  space:
    lr: {low: 0.001, high: 0.1, log: true}
    hidden: {choices: [[4], [8, 8]]}   # layer sizes
"""


def _rows(ws: Path) -> list[dict]:
    return list(csv.DictReader((ws / "reports" / "tune.csv").read_text().splitlines()))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, prefect_server):
    """A workspace whose study ran 3 trials once, and that run."""
    ws = make_workspace(tmp_path_factory.mktemp("tune") / "ws", TUNE_PARAMS)
    return ws, run_tune(ws, workers=2)


def test_tune_writes_the_leaderboard_and_a_rerun_trains_nothing(tuned):
    ws, first = tuned
    assert (first.new, first.trained) == (3, 3)
    rows = _rows(ws)
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and sorted(r["trial"] for r in rows) == ["0", "1", "2"]
    assert list(rows[0])[:5] == ["rank", "trial", "lr", "hidden", "val_mse"]
    assert {r["hidden"] for r in rows} <= {"[4]", "[8, 8]"} and all(0.001 <= float(r["lr"]) <= 0.1 for r in rows)
    ok = [float(r["val_mse"]) for r in rows if r["status"] == "ok"]
    assert ok == sorted(ok) and ok
    assert (ws / ".dvc" / "tmp" / "fitline-tune.db").exists()

    again = run_tune(ws, workers=2)  # the same budget: the study is finished
    assert (again.new, again.trained) == (0, 0)
    assert again.study == first.study and _rows(ws) == rows


def test_table_artifact_holds_the_leaderboard(tuned, prefect_server):
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    result = run_tune(tuned[0])  # nothing to run: the artifact still shows the whole study
    with get_client(sync_client=True) as client:
        art = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fitline-tune"])))
    table = json.loads(art[0].data)
    assert [r["trial"] for r in table] == [r["trial"] for r in result.rows] and len(table) == 3
    assert result.study in art[0].description and "best: lr=" in art[0].description


def test_a_larger_budget_continues_the_study_by_exactly_the_difference(tuned, tmp_path):
    ws = Path(shutil.copytree(tuned[0], tmp_path / "ws"))
    more = run_tune(ws, trials=4, workers=2)
    assert more.new == 1 and more.study == tuned[1].study
    assert sorted(r["trial"] for r in _rows(ws)) == ["0", "1", "2", "3"]
    # a fresh study would repeat the seed's first draws (cache hits): the continued one does not
    assert more.trained == 1


def test_apply_writes_the_best_trial_and_keeps_comments(tuned, tmp_path):
    ws = Path(shutil.copytree(tuned[0], tmp_path / "ws"))
    result = run_tune(ws, apply=True)
    assert result.new == 0
    best = result.best["params"]
    train = yaml.safe_load((ws / "params.yaml").read_text())["train"]
    assert (train["lr"], train["hidden"]) == (best["lr"], best["hidden"])
    text = (ws / "params.yaml").read_text()
    assert "# the study under test" in text and "# one small layer" in text
    assert all(ln[2:].strip().startswith(("lr:", "hidden:")) for ln in _changed_lines(TUNE_PARAMS, text))


def test_a_changed_space_starts_a_new_study(tuned, tmp_path):
    ws = Path(shutil.copytree(tuned[0], tmp_path / "ws"))
    (ws / "params.yaml").write_text(TUNE_PARAMS.replace("high: 0.1,", "high: 0.05,"))
    result = run_tune(ws, trials=1)
    assert result.study != tuned[1].study and result.new == 1 and len(result.rows) == 1


def test_a_pruned_trial_is_recorded_but_never_cached(tuned, tmp_path):
    """A trial the pruner stops is not a result of its params: the sweep must train them in full."""
    from prefect import flow

    ws = Path(shutil.copytree(tuned[0], tmp_path / "ws"))
    params = parse_params(yaml.safe_load(TUNE_PARAMS))
    # one finished trial far better than any real one at every epoch
    best = {"status": "ok", "loss": "mse", "val": {"mse": 1e-6},
            "history": [{"epoch": e, "val_loss": 1e-6} for e in range(1, 7)]}
    trial = pruning_trial(params.tune.model_copy(update={"startup_trials": 1}), [best])
    train = trial_params(params.train, {"lr": 0.0013})
    data = load_trial_data(ws)

    @flow
    def one_trial():
        task = tune_trial_task.with_options(result_storage=cache_storage(ws))
        return task(label="pruned", train=train, evaluate=params.evaluate, data=data, code_key=code_fingerprint(),
                    trial=trial)

    result = one_trial()
    assert result["status"] == "pruned" and result["epochs"] == 2  # reported epochs 1 and 2; pruned after warmup
    assert "pruned at epoch 2" in result["error"]
    key = trial_key(train, params.evaluate, data.key, code_fingerprint())
    assert not (cache_storage(ws) / key).exists()
    swept = run_sweep(ws, grid={"lr": [0.0013]})
    assert not swept.trials[0]["cached"] and swept.trials[0]["epochs"] == 6
    assert (cache_storage(ws) / key).exists()  # the full run is cached as usual


@pytest.mark.slow
def test_process_pool_runner(tuned, tmp_path):
    ws = Path(shutil.copytree(tuned[0], tmp_path / "ws"))
    result = run_tune(ws, trials=5, runner="processes", workers=2)  # the pruning trial travels pickled
    assert result.new == 2 and {t["status"] for t in result.trials} <= {"ok", "pruned"}


def test_tell_records_each_outcome_as_its_study_state():
    import optuna

    from flows.tune import finished, tell
    from stages.core.params import SpaceParam
    from stages.tools.tune import rank_study

    space = {"lr": SpaceParam(low=0.001, high=0.1, log=True)}
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.0, "seconds": 0.1}]
    outcomes = [{"status": "ok", "error": None, "task": "regression", "loss": "mse", "val": {"mse": 1.5},
                 "test": {"mse": 1.6}, "epochs": 1, "seconds": 0.1, "history": history},
                {"status": "pruned", "error": "pruned at epoch 1", "task": "regression", "loss": "mse", "epochs": 1,
                 "seconds": 0.1, "history": history},
                {"status": "failed", "error": "training diverged", "task": "regression", "loss": "mse"}]
    study = optuna.create_study()
    for i, result in enumerate(outcomes):
        trial = study.ask()
        trial.suggest_float("lr", 0.001, 0.1, log=True)
        tell(study, trial, result, cached=i == 0)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL"] and finished(study) == 3
    assert study.trials[0].value == 1.5 and study.trials[0].user_attrs["result"]["cached"] is True
    assert study.trials[1].user_attrs["result"]["history"] == history  # the curve the pruner replays
    assert [(t["trial"], t["status"]) for t in rank_study(study.trials, space)] == [
        (0, "ok"), (1, "pruned"), (2, "failed")]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("change", "args", "fragment"), [
    (None, ["--trials", "0"], "--trials: 0; must be 1 or more"),
    (("lr: {low: 0.001", "learning_rate: {low: 0.001"), [], "tune.space: unknown train key 'learning_rate'"),
    (("choices: [[4], [8, 8]]", "choices: []"), [], "tune.space.hidden.choices: empty"),
    (("low: 0.001, high: 0.1, log: true", "low: 0.0, high: 0.1, log: true"), [], "log scale needs low > 0"),
    (("choices: [[4], [8, 8]]", "choices: [[4], [0]]"), [], "train.hidden"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, change, args, fragment):
    text = TUNE_PARAMS if change is None else TUNE_PARAMS.replace(*change)
    ws = make_workspace(tmp_path / "ws", TUNE_PARAMS)
    (ws / "params.yaml").write_text(text)
    result = CliRunner().invoke(app, ["tune", "--root", str(ws), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fitline tune: error: ") and fragment in lines[0], lines
    assert not (ws / ".dvc" / "tmp" / "fitline-tune.db").exists()


def test_one_tune_per_storage_file_at_a_time(tmp_path):
    from flows.tune import StudyBusy, study_lock

    ws = make_workspace(tmp_path / "ws", TUNE_PARAMS)
    tune = parse_params(yaml.safe_load(TUNE_PARAMS)).tune
    with study_lock(ws, tune), pytest.raises(StudyBusy, match=r"another fitline tune is using \.dvc/tmp/fitline-tune"):
        run_tune(ws)
    with study_lock(ws, tune):  # released: free again
        pass


def test_unvalidated_data_is_refused_with_exit_2(tmp_path):
    ws = make_workspace(tmp_path / "ws", TUNE_PARAMS, validated=False)
    result = CliRunner().invoke(app, ["tune", "--root", str(ws)])
    assert result.exit_code == 2 and "dvc repro validate" in result.output
    assert len(result.output.strip().splitlines()) == 1
