"""The model-quality gate: rule parsing, each rule kind on crafted metrics, the report, a
baseline read from a real git repository, the CLI's exit codes, and the workflow file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from stages.core.params import GateParams, load_params, parse_params
from stages.tools.gate import main as gate_main
from stages.tools.gate import run_gate
from stages.tools.gate_report import render_markdown, result_json
from stages.tools.gate_rules import (
    GateError,
    GateResult,
    MetricMissing,
    NoRegression,
    Row,
    Threshold,
    evaluate_rules,
    judge_regression,
    lookup,
    parse_rules,
    parse_threshold,
)
from tests.conftest import ROOT, make_pipeline_repo, run_cmd

EVAL = {
    "train": {"mse": 1.0, "rmse": 1.0, "mae": 0.8, "r2": 0.96},
    "val": {"mse": 1.21, "rmse": 1.1, "mae": 0.88, "r2": 0.95},
    "test": {"mse": 1.21, "rmse": 1.1, "mae": 0.9, "r2": 0.95},
    "baseline": {"mse": 24.0, "rmse": 4.9, "mae": 4.0, "r2": 0.0},
    "fit": {"verdict": "good", "reasons": [], "remedies": []},
}
EXPORT = {"metric_drop": 0.001, "parity_max_abs": 2e-6, "quantized": True}


def metrics(**changes: float | str) -> dict:
    """{eval, export} metrics with some values replaced: metrics(**{"eval.test.rmse": 2.0})."""
    m = json.loads(json.dumps({"eval": EVAL, "export": EXPORT}))
    for path, value in changes.items():
        prefix, *keys = path.split(".")
        node = m[prefix]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return m


def gate_params(rules=(), regressions=()) -> GateParams:
    return GateParams.model_validate({"rules": list(rules), "regressions": list(regressions)})


# ------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "path", "op", "value"),
    [
        ("eval.test.r2 >= 0.85", "eval.test.r2", ">=", 0.85),
        ("eval.test.r2>=0.85", "eval.test.r2", ">=", 0.85),
        ("export.parity_max_abs <= 1e-4", "export.parity_max_abs", "<=", 1e-4),
        ("train.epochs_run > 3", "train.epochs_run", ">", 3.0),
        ("eval.test.log_loss < -.5", "eval.test.log_loss", "<", -0.5),
        ("eval.fit.verdict == good", "eval.fit.verdict", "==", "good"),
        ("eval.fit.verdict != overfit+underfit", "eval.fit.verdict", "!=", "overfit+underfit"),
        ("eval.fit.verdict == 'good'", "eval.fit.verdict", "==", "good"),
        ('eval.fit.verdict == "a b"', "eval.fit.verdict", "==", "a b"),
        ("eval.x == nan", "eval.x", "==", "nan"),  # a word: thresholds are finite numbers
        ("eval.fit.reasons.0 == x", "eval.fit.reasons.0", "==", "x"),
    ],
)
def test_parse_threshold(text, path, op, value):
    rule = parse_threshold(text)
    assert (rule.path, rule.op, rule.value) == (path, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eval.test.r2 => 0.85", "is not PATH OP VALUE"),
        ("eval.test.r2 0.85", "is not PATH OP VALUE"),
        ("eval.test.r2 >=", "has no value"),
        ("r2 >= 0.85", "is not PATH OP VALUE"),  # a path needs FILE.KEY
        ("metrics.test.r2 >= 0.85", "unknown metrics file 'metrics'"),
        ("eval.fit.verdict >= good", "'>=' needs a number"),
        ("eval.test.r2 >= 0.85 or so", "is not a number, a bare word or a quoted string"),
        ("eval.fit.verdict == 'good", "is not a number, a bare word or a quoted string"),
        ("eval.test.r2 <= inf", "'<=' needs a number"),
    ],
)
def test_parse_threshold_errors_name_the_rule(text, message):
    with pytest.raises(GateError, match=message) as exc:
        parse_threshold(text, "gate.rules[3]")
    assert "gate.rules[3]" in str(exc.value) and text.split()[0] in str(exc.value)
    assert exc.value.exit_code == 2


def test_parse_rules_reports_every_malformed_rule():
    params = gate_params(
        rules=["eval.test.r2 >= 0.85", "eval.test.r2 => 1", {"rule": "foo.x < 1", "when": "regression"}],
        regressions=[{"metric": "evaltest", "better": "lower"}],
    )
    with pytest.raises(GateError) as exc:
        parse_rules(params)
    msg = str(exc.value)
    assert "gate.rules[1]" in msg and "gate.rules[2]" in msg and "gate.regressions[0]" in msg
    assert "gate.rules[0]" not in msg


def test_parse_rules_kinds_and_when():
    params = gate_params(
        rules=["eval.test.r2 >= 0.85", {"rule": "eval.test.accuracy >= 0.9", "when": "classification"}],
        regressions=[{"metric": "eval.test.rmse", "better": "lower", "rel_tol": 0.02, "when": "regression"}],
    )
    r2, acc, rmse = parse_rules(params)
    assert isinstance(r2, Threshold) and r2.when is None
    assert isinstance(acc, Threshold) and acc.when == "classification"
    assert rmse == NoRegression("eval.test.rmse", "lower", 0.0, 0.02, "regression")


@pytest.mark.parametrize(
    ("gate_yaml", "message"),
    [
        ("regressions: [{metric: eval.test.rmse, better: smaller}]", "better"),
        ("regressions: [{metric: eval.test.rmse, better: lower, rel_tol: -1}]", "rel_tol"),
        ("regressions: [{metric: eval.test.rmse, better: lower, abs_tol: .inf}]", "abs_tol"),
        ("regressions: [{metric: eval.test.rmse, better: lower, tol: 1}]", "tol"),
        ("rules: [{rule: eval.test.r2 >= 0.8, when: ranking}]", "when"),
        ("threshold: 1", "threshold"),
    ],
)
def test_gate_params_rejects_bad_shapes(gate_yaml, message):
    from stages.core.errors import ParamsError

    with pytest.raises(ParamsError, match=message):
        parse_params({"gate": yaml.safe_load(gate_yaml)})


def test_project_params_gate_rules_parse():
    rules = parse_rules(load_params(ROOT / "params.yaml").gate)
    assert any(isinstance(r, NoRegression) for r in rules) and any(isinstance(r, Threshold) for r in rules)


def test_project_params_default_gate_rules():
    """The gate CI runs by default, rule by rule: loosening one must be a visible change here."""
    gate = yaml.safe_load((ROOT / "params.yaml").read_text())["gate"]
    assert gate == {
        "rules": [
            {"rule": "eval.test.r2 >= 0.90", "when": "regression"},
            {"rule": "eval.test.accuracy >= 0.7", "when": "classification"},
            "eval.fit.verdict == good",
            "export.metric_drop <= 0.01",
            "export.parity_max_scaled <= 1.0",
        ],
        "regressions": [
            {"metric": "eval.test.rmse", "better": "lower", "rel_tol": 0.02, "when": "regression"},
            {"metric": "eval.test.r2", "better": "higher", "abs_tol": 0.005, "when": "regression"},
            {"metric": "eval.test.log_loss", "better": "lower", "rel_tol": 0.05, "when": "classification"},
            {"metric": "eval.test.accuracy", "better": "higher", "abs_tol": 0.01, "when": "classification"},
        ],
    }
    # and as the gate reads them
    assert parse_rules(load_params(ROOT / "params.yaml").gate) == [
        Threshold("eval.test.r2", ">=", 0.9, "eval.test.r2 >= 0.90", "regression"),
        Threshold("eval.test.accuracy", ">=", 0.7, "eval.test.accuracy >= 0.7", "classification"),
        Threshold("eval.fit.verdict", "==", "good", "eval.fit.verdict == good"),
        Threshold("export.metric_drop", "<=", 0.01, "export.metric_drop <= 0.01"),
        Threshold("export.parity_max_scaled", "<=", 1.0, "export.parity_max_scaled <= 1.0"),
        NoRegression("eval.test.rmse", "lower", rel_tol=0.02, when="regression"),
        NoRegression("eval.test.r2", "higher", abs_tol=0.005, when="regression"),
        NoRegression("eval.test.log_loss", "lower", rel_tol=0.05, when="classification"),
        NoRegression("eval.test.accuracy", "higher", abs_tol=0.01, when="classification"),
    ]


# ------------------------------------------------------------------------------ lookups


def test_lookup_paths_and_missing_messages():
    m = metrics()
    assert lookup(m, "eval.test.r2") == 0.95
    assert lookup(m, "eval.fit.verdict") == "good"
    with pytest.raises(MetricMissing, match=r"no 'r2x' in eval.test \(has: mae, mse, r2, rmse\)"):
        lookup(m, "eval.test.r2x")
    with pytest.raises(MetricMissing, match="metrics/train.json not available"):
        lookup(m, "train.epochs_run")
    with pytest.raises(MetricMissing, match="eval.test.r2 is a float"):
        lookup(m, "eval.test.r2.x")


# ------------------------------------------------------------------- absolute rules judged


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        ("eval.test.r2 >= 0.95", "pass"),  # the boundary passes >=
        ("eval.test.r2 >= 0.951", "fail"),
        ("eval.test.r2 > 0.95", "fail"),
        ("eval.test.r2 > 0.9", "pass"),
        ("eval.test.rmse <= 1.1", "pass"),
        ("eval.test.rmse < 1.1", "fail"),
        ("eval.test.rmse <= 1.0", "fail"),
        ("eval.test.r2 == 0.95", "pass"),
        ("eval.test.r2 != 0.95", "fail"),
        ("eval.fit.verdict == good", "pass"),
        ("eval.fit.verdict == overfit", "fail"),
        ("eval.fit.verdict != overfit", "pass"),
        ("eval.fit.verdict != 'good'", "fail"),
        ("export.quantized == true", "pass"),
        ("export.quantized == false", "fail"),
        ("export.parity_max_abs <= 1e-4", "pass"),
    ],
)
def test_threshold_pass_and_fail(rule, status):
    result = evaluate_rules([parse_threshold(rule)], metrics())
    assert result.rows[0].status == status
    assert result.exit_code == {"pass": 0, "fail": 1}[status]
    assert result.passed is (status == "pass")


@pytest.mark.parametrize(
    ("rule", "current", "status", "detail"),
    [
        ("eval.test.r2 >= 0.8", "high", "error", "needs a number"),
        ("eval.test.r2 >= 0.8", True, "error", "needs a number"),  # a bool is not a number
        ("eval.fit.verdict == good", 1.0, "error", "compares text"),
        ("eval.test.r2 >= 0.8", math.nan, "fail", "nan"),  # never passes, whatever the op
        ("eval.test.r2 != 0.8", math.nan, "fail", "nan"),
        ("eval.test.rmse <= 2", math.inf, "fail", "inf"),
    ],
)
def test_threshold_wrong_types_and_non_finite(rule, current, status, detail):
    path = rule.split()[0]
    row = evaluate_rules([parse_threshold(rule)], metrics(**{path: current})).rows[0]
    assert (row.status, detail in row.detail) == (status, True)


def test_missing_metric_and_missing_file_cannot_judge():
    m = metrics()
    del m["export"]
    result = evaluate_rules(
        [parse_threshold("eval.test.r2 >= 0.5"), parse_threshold("eval.test.accuracy >= 0.9"),
         parse_threshold("export.metric_drop <= 0.01")],
        m, errors=["current metrics/export.json: file not found"],
    )
    assert [r.status for r in result.rows] == ["pass", "error", "error"]
    assert "no 'accuracy' in eval.test" in result.rows[1].detail
    assert "metrics/export.json not available" in result.rows[2].detail
    assert result.exit_code == 2 and not result.passed


# ----------------------------------------------------------------- regression rules judged

RMSE_LOWER_2PCT = NoRegression("eval.test.rmse", "lower", abs_tol=0.0, rel_tol=0.02)


@pytest.mark.parametrize(
    ("rule", "baseline", "current", "status"),
    [
        (RMSE_LOWER_2PCT, 1.0, 1.0, "pass"),
        (RMSE_LOWER_2PCT, 1.0, 0.5, "pass"),  # better
        (RMSE_LOWER_2PCT, 1.0, 1.0199, "pass"),
        (RMSE_LOWER_2PCT, 1.0, 1.0201, "fail"),
        (RMSE_LOWER_2PCT, -1.0, -0.985, "pass"),  # |baseline|: the tolerance never goes negative
        (NoRegression("eval.test.r2", "higher", rel_tol=0.01), 0.9, 0.892, "pass"),
        (NoRegression("eval.test.r2", "higher", rel_tol=0.01), 0.9, 0.890, "fail"),
        (NoRegression("eval.test.r2", "higher", rel_tol=0.01), 0.9, 0.99, "pass"),
        # the larger of abs_tol and rel_tol * |baseline| is allowed
        (NoRegression("eval.test.mae", "lower", abs_tol=0.05, rel_tol=0.01), 0.1, 0.149, "pass"),
        (NoRegression("eval.test.mae", "lower", abs_tol=0.05, rel_tol=0.01), 0.1, 0.151, "fail"),
        (NoRegression("eval.test.mae", "lower", abs_tol=0.001, rel_tol=0.5), 10.0, 14.9, "pass"),
        (NoRegression("eval.test.mae", "lower", abs_tol=0.001, rel_tol=0.5), 10.0, 15.1, "fail"),
        (NoRegression("eval.test.mae", "lower"), 0.0, 0.0, "pass"),  # zero tolerance: no worsening
        (NoRegression("eval.test.mae", "lower"), 0.0, 1e-12, "fail"),
    ],
)
def test_regression_pass_and_fail(rule, baseline, current, status):
    result = evaluate_rules([rule], metrics(**{rule.path: current}), metrics(**{rule.path: baseline}))
    row = result.rows[0]
    assert row.status == status, row
    assert (row.baseline, row.current) == (baseline, current)
    assert row.change == pytest.approx(current - baseline)
    assert result.exit_code == {"pass": 0, "fail": 1}[status]


def test_regression_rule_text():
    assert RMSE_LOWER_2PCT.text == "lower is better, tol 2%"
    assert NoRegression("eval.test.r2", "higher").text == "higher is better, tol 0"
    assert NoRegression("eval.test.r2", "higher", 0.005, 0.01).text == "higher is better, tol max(0.005, 1%)"


def test_regression_failure_detail_gives_numbers():
    status, detail = judge_regression(RMSE_LOWER_2PCT, 1.5, 1.0)
    assert status == "fail" and detail == "worse by 0.5, allowed 0.02"


def test_regression_change_percent():
    row = evaluate_rules([RMSE_LOWER_2PCT], metrics(**{"eval.test.rmse": 1.5}),
                         metrics(**{"eval.test.rmse": 1.0})).rows[0]
    assert row.change_pct == pytest.approx(50.0)


def test_no_baseline_skips_regressions_but_judges_thresholds():
    rules = [parse_threshold("eval.test.r2 >= 0.9"), RMSE_LOWER_2PCT]
    result = evaluate_rules(rules, metrics(), baseline=None)
    assert [(r.status, r.detail) for r in result.rows] == [("pass", ""), ("skip", "no baseline")]
    assert result.exit_code == 0
    # a regression rule on a metric missing from the current run is an error even without baseline
    missing = evaluate_rules([NoRegression("eval.test.accuracy", "higher")], metrics())
    assert missing.rows[0].status == "error" and missing.exit_code == 2


def test_regression_metric_missing_or_bad_in_baseline_cannot_judge():
    base = metrics()
    del base["eval"]["test"]["rmse"]
    row = evaluate_rules([RMSE_LOWER_2PCT], metrics(), base).rows[0]
    assert row.status == "error" and row.detail.startswith("missing in baseline")
    nan_base = evaluate_rules([RMSE_LOWER_2PCT], metrics(), metrics(**{"eval.test.rmse": math.nan}))
    assert nan_base.rows[0].status == "error" and nan_base.exit_code == 2
    text = evaluate_rules([NoRegression("eval.fit.verdict", "higher")], metrics(), metrics())
    assert text.rows[0].status == "error" and "needs a number" in text.rows[0].detail
    # a worse current value that is NaN fails, it does not error
    nan_cur = evaluate_rules([RMSE_LOWER_2PCT], metrics(**{"eval.test.rmse": math.nan}), metrics())
    assert nan_cur.rows[0].status == "fail"


# -------------------------------------------------------------------------- when: task


def test_when_skips_rules_of_the_other_task():
    rules = parse_rules(gate_params(
        rules=[{"rule": "eval.test.r2 >= 0.9", "when": "regression"},
               {"rule": "eval.test.accuracy >= 0.9", "when": "classification"}],
        regressions=[{"metric": "eval.test.log_loss", "better": "lower", "when": "classification"}],
    ))
    result = evaluate_rules(rules, metrics(), metrics(), task="regression")
    assert [r.status for r in result.rows] == ["pass", "skip", "skip"]
    assert result.rows[1].detail == "only for classification (task is regression)"
    assert result.exit_code == 0
    unknown = evaluate_rules(rules, metrics(), metrics(), task=None)
    assert [r.status for r in unknown.rows] == ["error"] * 3 and unknown.exit_code == 2


def test_exit_codes_errors_win_and_nothing_judged_is_not_a_pass():
    fail = parse_threshold("eval.test.r2 >= 0.99")
    missing = parse_threshold("eval.test.accuracy >= 0.5")
    assert evaluate_rules([fail, missing], metrics()).exit_code == 2
    assert evaluate_rules([fail], metrics(), errors=["something unreadable"]).exit_code == 2
    assert evaluate_rules([], metrics()).exit_code == 2
    assert evaluate_rules([RMSE_LOWER_2PCT], metrics()).exit_code == 2  # only skipped rows


# ------------------------------------------------------------------------------- report


def _result() -> GateResult:
    rules = [parse_threshold("eval.test.r2 >= 0.9"), parse_threshold("eval.fit.verdict == good"),
             RMSE_LOWER_2PCT, NoRegression("export.parity_max_abs", "lower", abs_tol=1e-5)]
    cur = metrics(**{"eval.test.rmse": 1.5, "eval.test.r2": 0.5, "eval.fit.verdict": "under|fit"})
    result = evaluate_rules(rules, cur, metrics())
    return GateResult(rows=result.rows, baseline_rev="origin/main", baseline_commit="0123456789abcdef")


def test_markdown_report_verdict_and_table():
    md = render_markdown(_result())
    lines = md.splitlines()
    assert lines[0] == "**Model quality gate: FAILED** — 3 of 4 rules failed"
    assert "Baseline: `origin/main` (`0123456789`)" in md
    assert "| Metric | Baseline | Current | Change | Rule | Result |" in lines
    r2 = next(line for line in lines if line.startswith("| `eval.test.r2`"))
    assert r2 == "| `eval.test.r2` | 0.95 | 0.5 | -0.45 (-47.4%) | `>= 0.9` | ❌ fail: 0.5 is not >= 0.9 |"
    rmse = next(line for line in lines if line.startswith("| `eval.test.rmse`"))
    assert "+0.4 (+36.4%)" in rmse and "lower is better, tol 2%" in rmse and "❌ fail" in rmse
    assert "under\\|fit" in md  # a pipe in a value does not break the table
    assert "| `export.parity_max_abs` | 2e-06 | 2e-06 | +0 (+0.0%) | lower is better, tol 1e-05 | ✅ pass |" in md


def test_report_for_pass_and_cannot_judge():
    ok = evaluate_rules([parse_threshold("eval.test.r2 >= 0.9"), RMSE_LOWER_2PCT], metrics())
    assert render_markdown(ok).splitlines()[0] == (
        "**Model quality gate: PASSED** — all 1 rule passed (1 skipped)")
    assert "No baseline revision given" in render_markdown(ok)
    bad = GateResult(errors=("unknown baseline revision 'nope'",), baseline_rev="nope")
    assert render_markdown(bad).splitlines()[0] == (
        "**Model quality gate: CANNOT JUDGE** — unknown baseline revision 'nope'")


def test_json_result_is_plain_json():
    result = evaluate_rules([parse_threshold("eval.test.r2 >= 0.9")], metrics(**{"eval.test.r2": math.nan}))
    out = result_json(result)
    text = json.dumps(out, allow_nan=False)  # NaN is written as a string
    assert json.loads(text)["rows"][0]["current"] == "nan"
    assert out["passed"] is False and out["exit_code"] == 1 and out["verdict"] == "FAILED"
    assert set(out) == {"passed", "exit_code", "verdict", "summary", "baseline", "task", "rows", "errors"}
    assert set(out["rows"][0]) == set(Row.__dataclass_fields__)


# ------------------------------------------------------------- files, git and the CLI


def _git(repo: Path, *args: str) -> str:
    return run_cmd(["git", *args], repo).stdout.strip()


def _write_metrics(repo: Path, rmse: float, r2: float, task: str = "regression") -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    m = metrics(**{"eval.test.rmse": rmse, "eval.test.r2": r2})
    (repo / "metrics" / "eval.json").write_text(json.dumps(m["eval"]))
    (repo / "metrics" / "export.json").write_text(json.dumps(m["export"]))
    (repo / "data" / "meta.json").write_text(json.dumps({"task": task}))


GATE_YAML = """\
gate:
  rules:
    - eval.test.r2 >= 0.8
    - {rule: eval.test.accuracy >= 0.9, when: classification}
    - export.parity_max_abs <= 1.0e-4
  regressions:
    - {metric: eval.test.rmse, better: lower, rel_tol: 0.02}
"""


@pytest.fixture
def metrics_repo(tmp_path: Path) -> Path:
    """A git repository with two commits of metrics: rmse 1.0 then 1.1 (r2 0.95 then 0.94)."""
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "params.yaml").write_text(GATE_YAML)
    (repo / ".gitignore").write_text("/data\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@fitline.local")
    _git(repo, "config", "user.name", "t")
    for rmse, r2 in ((1.0, 0.95), (1.1, 0.94)):
        _write_metrics(repo, rmse, r2)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"metrics rmse {rmse}")
    return repo


def test_baseline_from_a_real_git_history(metrics_repo: Path, monkeypatch):
    # the workspace matches HEAD (rmse 1.1); HEAD~1 had rmse 1.0: a 10% regression
    monkeypatch.chdir(metrics_repo)
    result, md = gate_main("HEAD~1")
    rows = {r.metric: r for r in result.rows}
    assert rows["eval.test.rmse"].status == "fail"
    assert (rows["eval.test.rmse"].baseline, rows["eval.test.rmse"].current) == (1.0, 1.1)
    assert rows["eval.test.accuracy"].status == "skip"
    assert result.exit_code == 1
    assert result.baseline_commit == _git(metrics_repo, "rev-parse", "HEAD~1")
    assert md.startswith("**Model quality gate: FAILED** — 1 of 3 rules failed (1 skipped)")

    # the baseline is read from git, not from the workspace: an uncommitted change counts as current
    _write_metrics(metrics_repo, 1.105, 0.94)
    assert gate_main("HEAD")[0].exit_code == 0
    _write_metrics(metrics_repo, 1.2, 0.94)
    head = gate_main("HEAD")[0]
    assert head.exit_code == 1 and {r.metric: r for r in head.rows}["eval.test.rmse"].baseline == 1.1


def test_baseline_problems_cannot_judge(metrics_repo: Path, monkeypatch):
    monkeypatch.chdir(metrics_repo)
    unknown = gate_main("no-such-branch")[0]
    assert unknown.exit_code == 2 and "unknown baseline revision 'no-such-branch'" in unknown.errors[0]
    assert gate_main("--all")[0].exit_code == 2  # never passed to git as an option
    # a revision before the metrics files existed
    _git(metrics_repo, "checkout", "-q", "--orphan", "empty")
    _git(metrics_repo, "rm", "-rq", "--cached", ".")
    _git(metrics_repo, "commit", "-q", "--allow-empty", "-m", "nothing")
    _git(metrics_repo, "checkout", "-q", "-f", "main")
    missing = gate_main("empty")[0]
    assert missing.exit_code == 2
    assert any("metrics/eval.json: not in git at baseline 'empty'" in e for e in missing.errors)


def test_gate_outside_git_cannot_judge_a_baseline(tmp_path: Path, monkeypatch):
    (tmp_path / "params.yaml").write_text(GATE_YAML)
    _write_metrics(tmp_path, 1.0, 0.95)
    monkeypatch.chdir(tmp_path)
    assert gate_main(None)[0].exit_code == 0
    result = gate_main("HEAD")[0]
    assert result.exit_code == 2 and "not in a git repository" in result.errors[0]


def test_task_for_when_comes_from_meta_json(metrics_repo: Path):
    params = load_params(metrics_repo / "params.yaml").gate
    rows = {r.metric: r for r in run_gate(params, None, metrics_repo).rows}
    assert rows["eval.test.accuracy"].status == "skip"  # meta.json says regression
    _write_metrics(metrics_repo, 1.0, 0.95, task="classification")
    result = run_gate(params, None, metrics_repo)
    assert result.task == "classification"
    assert {r.metric: r for r in result.rows}["eval.test.accuracy"].status == "error"  # no accuracy here
    (metrics_repo / "data" / "meta.json").unlink()
    result = run_gate(params, None, metrics_repo)
    assert result.exit_code == 2 and "rules with `when` need the task" in result.errors[0]


def test_cli_missing_metrics_file_exit_2_and_writes_report(metrics_repo: Path):
    (metrics_repo / "metrics" / "export.json").unlink()
    proc = run_cmd(["fitline", "gate", "--baseline", "HEAD", "--report", "out/gate.md", "--json", "out/gate.json"],
                   metrics_repo, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.startswith("**Model quality gate: CANNOT JUDGE** — 1 of 3 rules could not be judged")
    assert "metrics/export.json: file not found" in proc.stdout
    out = json.loads((metrics_repo / "out" / "gate.json").read_text())
    assert out["exit_code"] == 2 and out["passed"] is False
    assert (metrics_repo / "out" / "gate.md").read_text().strip() == proc.stdout.strip()


def test_cli_malformed_rule_exit_2_names_it(metrics_repo: Path):
    (metrics_repo / "params.yaml").write_text(GATE_YAML.replace("r2 >= 0.8", "r2 >== 0.8"))
    proc = run_cmd(["fitline", "gate"], metrics_repo, check=False)
    assert proc.returncode == 2
    assert "gate.rules[0]: 'eval.test.r2 >== 0.8' is not PATH OP VALUE" in proc.stdout


def test_cli_passes_and_fails(metrics_repo: Path):
    assert run_cmd(["fitline", "gate", "--baseline", "HEAD"], metrics_repo, check=False).returncode == 0
    proc = run_cmd(["fitline", "gate", "--baseline", "HEAD~1"], metrics_repo, check=False)
    assert proc.returncode == 1 and "❌ fail: worse by 0.1, allowed 0.02" in proc.stdout


# ----------------------------------------------------------------------- the workflow


def test_workflow_file_is_valid_yaml_with_the_gate_steps():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "model-quality.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in on
    steps = wf["jobs"]["gate"]["steps"]
    for step in steps:
        assert set(step) & {"uses", "run"} and set(step) <= {"name", "id", "if", "uses", "with", "run", "env",
                                                             "continue-on-error", "shell"}
    uses = [s.get("uses", "") for s in steps]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert any(u.startswith("actions/checkout@") for u in uses)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    assert any(u.startswith("actions/setup-python@") for u in uses)
    # fitline repro runs the stages with the venv's Python (a bare .venv/bin/dvc repro would not)
    assert "make install" in runs and ".venv/bin/fitline repro" in runs
    assert ".venv/bin/fitline gate --baseline" in runs and "--report gate.md" in runs
    assert wf["permissions"]["pull-requests"] == "write"
    # the last step fails the job when the gate did not pass
    assert "steps.gate.outputs.exit_code" in steps[-1]["if"] and "exit" in steps[-1]["run"]


# ------------------------------------------------------------ end to end: a degraded model

E2E_GATE = """\
gate:
  rules:
    - export.parity_max_abs <= 1.0e-4
    - {rule: eval.test.accuracy >= 0.5, when: classification}
  regressions:
    - {metric: eval.test.rmse, better: lower, rel_tol: 0.02, when: regression}
    - {metric: eval.test.r2, better: higher, abs_tol: 0.005, when: regression}
"""


@pytest.mark.slow
def test_degraded_model_fails_the_gate_against_the_committed_baseline(tmp_path: Path):
    from tests.conftest import SMALL_PARAMS, merged_params

    params = yaml.safe_load(SMALL_PARAMS)
    params["train"]["epochs"] = 40  # enough for a model worth protecting, still seconds
    params["gate"] = yaml.safe_load(E2E_GATE)["gate"]
    repo = make_pipeline_repo(tmp_path / "repo", yaml.safe_dump(params))
    run_cmd(["dvc", "repro"], repo)
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-q", "-m", "baseline run"], repo)
    tracked = run_cmd(["git", "ls-files", "metrics"], repo).stdout.split()
    assert {"metrics/eval.json", "metrics/export.json"} <= set(tracked), "metrics must be git-tracked"

    good = run_cmd(["fitline", "gate", "--baseline", "HEAD"], repo, check=False)
    assert good.returncode == 0, good.stdout + good.stderr

    # an absurdly small learning rate for a single epoch: a model that silently got much worse.
    # (An absurdly large one fails the pipeline itself, at export's parity or int8 budget.)
    params["train"].update(lr=1.0e-6, epochs=1)
    (repo / "params.yaml").write_text(merged_params(yaml.safe_dump(params)))
    run_cmd(["dvc", "repro"], repo)
    bad = run_cmd(["fitline", "gate", "--baseline", "HEAD", "--json", "gate.json"], repo, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.startswith("**Model quality gate: FAILED** — 2 of 3 rules failed (1 skipped)")
    rows = {r["metric"]: r for r in json.loads((repo / "gate.json").read_text())["rows"]}
    assert rows["eval.test.rmse"]["status"] == "fail" and rows["eval.test.r2"]["status"] == "fail"
    assert rows["eval.test.rmse"]["current"] > rows["eval.test.rmse"]["baseline"] * 1.02
    assert rows["eval.test.r2"]["current"] < rows["eval.test.r2"]["baseline"] - 0.005
    assert rows["export.parity_max_abs"]["status"] == "pass"
    assert rows["eval.test.accuracy"]["status"] == "skip"
