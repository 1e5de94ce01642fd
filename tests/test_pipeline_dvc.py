"""`dvc repro` in a real git + DVC copy of the project: it runs, and a second run does nothing."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import run_cmd


def _stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_dvc_repro_generate_then_nothing_to_do(pipeline_repo):
    first = run_cmd(["dvc", "repro", "generate"], pipeline_repo)
    assert _stages_run(first.stdout) == ["generate"]
    meta = json.loads((pipeline_repo / "data/meta.json").read_text())
    assert meta["rows"] == {"train": 420, "val": 90, "test": 90}
    second = run_cmd(["dvc", "repro", "generate"], pipeline_repo)
    assert _stages_run(second.stdout) == []
    assert "didn't change" in second.stdout
    status = run_cmd(["dvc", "status", "generate"], pipeline_repo)
    assert "up to date" in status.stdout


def test_params_error_stops_dvc_repro_with_one_line(pipeline_repo):
    (pipeline_repo / "params.yaml").write_text("data:\n  n_samples: 600\n  kind: spiral\n")
    proc = run_cmd(["dvc", "repro", "generate"], pipeline_repo, check=False)
    assert proc.returncode != 0
    assert "fitline generate: error: params.yaml: data.kind: 'spiral' is not allowed" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_changed_user_file_in_data_raw_reruns_generate(pipeline_repo):
    """data.source: file reads from data/raw/, a dependency of generate: editing the file is a
    change `dvc repro` sees (a file elsewhere would leave the data silently stale)."""
    user = pipeline_repo / "data/raw/houses.csv"
    rows = ["area,rooms,price"] + [f"{500 + 7 * i},{1 + i % 5},{1000 + 3 * i}" for i in range(60)]
    user.write_text("\n".join(rows) + "\n")
    params = yaml.safe_load((pipeline_repo / "params.yaml").read_text())
    params["data"].update(source="file", path="data/raw/houses.csv", target="price")
    (pipeline_repo / "params.yaml").write_text(yaml.safe_dump(params))
    first = run_cmd(["dvc", "repro", "generate"], pipeline_repo)
    assert _stages_run(first.stdout) == ["generate"]
    assert "outside" not in first.stderr  # no 'DVC cannot see this file' warning
    assert _stages_run(run_cmd(["dvc", "repro", "generate"], pipeline_repo).stdout) == []
    before = json.loads((pipeline_repo / "data/meta.json").read_text())
    user.write_text(user.read_text() + "9000,4,99999\n")
    assert "changed deps" in run_cmd(["dvc", "status", "generate"], pipeline_repo).stdout
    assert _stages_run(run_cmd(["dvc", "repro", "generate"], pipeline_repo).stdout) == ["generate"]
    after = json.loads((pipeline_repo / "data/meta.json").read_text())
    assert sum(after["rows"].values()) == sum(before["rows"].values()) + 1
    assert after["source_sha256"] != before["source_sha256"]


@pytest.mark.slow
def test_full_dvc_repro_twice_second_is_noop(pipeline_repo):
    run_cmd(["dvc", "repro"], pipeline_repo)
    second = run_cmd(["dvc", "repro"], pipeline_repo)
    assert _stages_run(second.stdout) == []
    assert "up to date" in run_cmd(["dvc", "status"], pipeline_repo).stdout


@pytest.mark.slow
def test_diverged_training_keeps_the_last_good_model(pipeline_repo):
    run_cmd(["dvc", "repro", "train"], pipeline_repo)
    good = (pipeline_repo / "models/model.pt").read_bytes()
    params = yaml.safe_load((pipeline_repo / "params.yaml").read_text())
    params["train"].update({"optimizer": "sgd", "lr": 100.0})
    (pipeline_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cmd(["dvc", "repro", "train"], pipeline_repo, check=False)
    assert proc.returncode != 0
    assert "fitline train: error: training diverged at epoch" in proc.stdout + proc.stderr
    assert (pipeline_repo / "models/model.pt").read_bytes() == good, "a failed run must keep the last good model"


@pytest.mark.slow
def test_a_failed_stage_keeps_the_committed_metrics(pipeline_repo):
    """A bad train or evaluate param used to leave git status showing metrics/train.json,
    metrics/train_history.csv or metrics/eval.json deleted: DVC removes non-persistent outputs
    before the command runs."""
    run_cmd(["dvc", "repro"], pipeline_repo)
    run_cmd(["git", "add", "-A"], pipeline_repo)
    run_cmd(["git", "commit", "-q", "-m", "a good run"], pipeline_repo)
    metrics = {p: (pipeline_repo / p).read_bytes() for p in
               ("metrics/train.json", "metrics/train_history.csv", "metrics/eval.json", "metrics/export.json")}
    params = yaml.safe_load((pipeline_repo / "params.yaml").read_text())
    for section, bad in (("train", {"optimizer": "sgd", "lr": 100.0}), ("evaluate", {"plot_points": 1})):
        changed = {**params, section: {**params[section], **bad}}
        (pipeline_repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        proc = run_cmd(["dvc", "repro"], pipeline_repo, check=False)
        assert proc.returncode != 0, section
        assert {p: (pipeline_repo / p).read_bytes() for p in metrics} == metrics, section
        status = run_cmd(["git", "status", "--porcelain", "--", "metrics"], pipeline_repo).stdout
        assert status == "", f"{section}: {status}"
