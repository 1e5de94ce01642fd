"""flows/history.py: the per-commit row, flattening of metrics, and the history table."""

from __future__ import annotations

import json

from flows.history import (
    Commit,
    HistoryEntry,
    collect_metrics,
    default_columns,
    flatten,
    format_history,
    gate_metrics,
    git_commit,
    metric_prefix,
    metrics_row,
    per_commit,
    report_markdown,
)
from tests.conftest import run_cmd


def test_flatten_nested_json_to_dotted_keys():
    data = {"test": {"mse": 0.5, "r2": 0.9}, "epochs": 3, "curve": [1.0, 0.5], "ok": True}
    assert flatten(data) == {"test.mse": 0.5, "test.r2": 0.9, "epochs": 3, "curve.0": 1.0, "curve.1": 0.5,
                             "ok": True}
    assert flatten(7) == {"value": 7}


def test_metric_prefix():
    assert metric_prefix("metrics/train.json") == "train"
    assert metric_prefix("metrics/sub/eval.json") == "sub/eval"
    assert metric_prefix("reports/score.json") == "reports/score"


def test_collect_metrics_skips_missing_and_digests_files(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps({"test": {"mse": 0.25}}))
    values, digest = collect_metrics(tmp_path, ["metrics/eval.json", "metrics/missing.json"])
    assert values == {"eval.test.mse": 0.25}
    (tmp_path / "metrics/eval.json").write_text(json.dumps({"test": {"mse": 0.5}}))
    assert collect_metrics(tmp_path, ["metrics/eval.json"])[1] != digest


def test_git_commit_and_row(toy_repo):
    sha = run_cmd(["git", "rev-parse", "HEAD"], toy_repo).stdout.strip()
    assert git_commit(toy_repo) == Commit(sha=sha, branch="main", dirty=False)
    (toy_repo / "params.yaml").write_text("a: {scale: 9}\n")
    commit = git_commit(toy_repo)
    assert commit.dirty and commit.tag == f"commit:{sha[:8]}"

    (toy_repo / "metrics").mkdir()
    (toy_repo / "metrics/c.json").write_text(json.dumps({"total": 6, "nested": {"scale": 3}}))
    row = metrics_row(toy_repo, commit, ["metrics/c.json"], flow_run="run-1")
    assert row["commit"] == sha and row["dirty"] is True and row["flow_run"] == "run-1"
    assert len(row["params_sha256"]) == 64
    assert row["c.total"] == 6 and row["c.nested.scale"] == 3
    assert "| c.total | 6 |" in report_markdown(row, {"a": "Cached"})


def _entry(created: str, commit: str, dirty: bool = False, **metrics) -> HistoryEntry:
    return HistoryEntry(created=created, row={"commit": commit, "branch": "main", "dirty": dirty, **metrics})


def test_per_commit_keeps_the_latest_run_of_each_commit_in_time_order():
    entries = [_entry("2026-01-01T00:00:00", "aaaa", mse=3.0), _entry("2026-01-02T00:00:00", "bbbb", mse=2.0),
               _entry("2026-01-03T00:00:00", "aaaa", mse=2.5), _entry("2026-01-04T00:00:00", "bbbb", True, mse=1.0)]
    picked = per_commit(entries)
    assert [(e.row["commit"], e.row["dirty"], e.row["mse"]) for e in picked] == [
        ("bbbb", False, 2.0), ("aaaa", False, 2.5), ("bbbb", True, 1.0)]


def test_format_history_table():
    entries = [_entry("2026-01-01T10:00:00+00:00", "a" * 40, **{"eval.mse": 0.123456789, "train.loss": 1}),
               _entry("2026-01-02T10:00:00+00:00", "b" * 40, True, **{"eval.mse": 0.1})]
    text = format_history(entries)
    lines = text.splitlines()
    assert lines[0].split() == ["date", "commit", "branch", "eval.mse", "train.loss"]
    assert lines[2].split() == ["2026-01-01", "10:00:00", "aaaaaaaa", "main", "0.123457", "1"]
    assert lines[3].split() == ["2026-01-02", "10:00:00", "bbbbbbbb+dirty", "main", "0.1"]
    assert format_history(entries, ["train"]).splitlines()[0].split() == ["date", "commit", "branch", "train.loss"]
    worded = [_entry("2026-01-01T10:00:00+00:00", "a" * 40, **{"eval.verdict": "good fit", "eval.mse": 0.5})]
    assert format_history(worded).splitlines()[0].split() == ["date", "commit", "branch", "eval.mse"]
    assert "good fit" in format_history(worded, ["eval.verdict"])
    assert "no fitline runs" in format_history([])


GATE_PARAMS = """\
gate:
  rules:
    - {rule: eval.test.r2 >= 0.9, when: regression}
    - {rule: eval.test.accuracy >= 0.7, when: classification}
    - eval.fit.verdict == good
  regressions:
    - {metric: eval.test.rmse, better: lower, rel_tol: 0.02}
    - {metric: eval.test.r2, better: higher, abs_tol: 0.005}
"""


def test_history_defaults_to_the_gates_metrics(tmp_path):
    (tmp_path / "params.yaml").write_text(GATE_PARAMS)
    assert gate_metrics(tmp_path) == ["eval.test.r2", "eval.test.accuracy", "eval.fit.verdict", "eval.test.rmse"]
    row = {"eval.test.r2": 0.95, "eval.test.rmse": 1.1, "eval.fit.verdict": "good", "eval.test.mae": 0.8,
           "train.wall_seconds": 6.0}
    entries = [_entry("2026-01-01T10:00:00+00:00", "a" * 40, **row)]
    # what the runs hold, in rule order; a classification rule's metric is not in a regression run
    assert default_columns(entries, tmp_path) == ["eval.test.r2", "eval.fit.verdict", "eval.test.rmse"]
    header = format_history(entries, default_columns(entries, tmp_path)).splitlines()[0].split()
    assert header == ["date", "commit", "branch", "eval.test.r2", "eval.test.rmse", "eval.fit.verdict"]
    # runs holding none of them (another pipeline), no params.yaml, or an unreadable gate: every numeric metric
    other = [_entry("2026-01-01T10:00:00+00:00", "a" * 40, **{"c.total": 6})]
    assert default_columns(other, tmp_path) is None
    assert default_columns(entries, tmp_path / "elsewhere") is None
    (tmp_path / "params.yaml").write_text("gate:\n  rules: [eval.test.r2 >>= 1]\n")
    assert gate_metrics(tmp_path) == []
