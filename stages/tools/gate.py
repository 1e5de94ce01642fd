"""The model-quality gate: judge the workspace's metrics against params `gate`, optionally
against the metrics committed at a baseline git revision.

`fitline gate [--baseline REV] [--report FILE] [--json FILE]` (flows/cli.py) calls `main`.
The rules and their judgement live in stages/tools/gate_rules.py (pure), the report in
stages/tools/gate_report.py; this module only reads files and git.

Baseline metrics are read with `git show REV:metrics/eval.json`, never from the workspace, so
the metrics files must be git-tracked (dvc.yaml `cache: false` on them, as DVC intends for
metrics). `dvc metrics diff` could read them too, but it has no tolerance and starts slower.

The gate is not a DVC stage: its input is a git revision, which DVC cannot track.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from stages.core.contracts import META_PATH, METRICS_FILES, PARAMS_PATH
from stages.core.errors import FitlineError
from stages.core.io import read_json, write_json, write_text
from stages.core.params import GateParams, load_params
from stages.tools.gate_report import render_markdown, result_json
from stages.tools.gate_rules import (
    GateError,
    GateResult,
    Rule,
    evaluate_rules,
    files_needed,
    parse_rules,
)

log = logging.getLogger(__name__)

def read_current(prefixes: list[str], root: Path) -> tuple[dict[str, Any], list[str]]:
    """The workspace's metrics files for these prefixes; a file that cannot be read is left out
    and its problem returned (the rules on it then cannot be judged)."""
    metrics: dict[str, Any] = {}
    problems: list[str] = []
    for prefix in prefixes:
        try:
            metrics[prefix] = read_json(root / METRICS_FILES[prefix])
        except FitlineError as exc:
            problems.append(f"current {exc}")
    return metrics, problems


def _git(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise GateError("git is not installed: a baseline revision cannot be read") from None


def resolve_revision(rev: str, root: Path) -> str:
    """The commit id of `rev`; a GateError when it is not a revision of this repository."""
    if not rev or rev.startswith("-"):
        raise GateError(f"baseline revision {rev!r} is not a revision name")
    proc = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], root)
    if proc.returncode == 0:
        return proc.stdout.strip()
    if _git(["rev-parse", "--git-dir"], root).returncode != 0:
        raise GateError(f"{root.resolve()} is not in a git repository: cannot read baseline {rev!r}")
    raise GateError(
        f"unknown baseline revision {rev!r} (a branch, tag or commit of this repository; "
        "in CI, check out with fetch-depth: 0 so origin/<base> exists)"
    )


def read_at_revision(path: str, rev: str, commit: str, root: Path) -> Any:
    """Parse the JSON file `path` (relative to `root`) as committed at `commit`."""
    # "./" makes the path relative to `root`, which may be a subfolder of the repository
    proc = _git(["show", f"{commit}:./{path}"], root)
    if proc.returncode != 0:
        raise GateError(
            f"{path}: not in git at baseline {rev!r} ({commit[:10]}); metrics files must be "
            "committed (dvc.yaml `cache: false`) for the gate to read a baseline"
        )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise GateError(f"{path} at baseline {rev!r}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_baseline(
    rev: str, needed: dict[str, bool], root: Path
) -> tuple[str, dict[str, Any], list[str]]:
    """(commit, metrics, problems) at revision `rev`. A file that regression rules need must be
    there (else a problem, exit 2); others only add baseline columns to the report."""
    commit = resolve_revision(rev, root)
    metrics: dict[str, Any] = {}
    problems: list[str] = []
    for prefix, required in needed.items():
        try:
            metrics[prefix] = read_at_revision(METRICS_FILES[prefix], rev, commit, root)
        except GateError as exc:
            if required:
                problems.append(str(exc))
            else:
                log.info("no baseline for %s: %s", prefix, exc)
    return commit, metrics, problems


def read_task(rules: list[Rule], root: Path) -> tuple[str | None, list[str]]:
    """The task (regression | classification) from data/meta.json, when a rule has `when`."""
    if not any(rule.when for rule in rules):
        return None, []
    try:
        task = read_json(root / META_PATH).get("task")
    except FitlineError as exc:
        return None, [f"rules with `when` need the task: {exc}"]
    if task not in ("regression", "classification"):
        return None, [f"{META_PATH}: task is {task!r}, expected regression or classification"]
    return task, []


def run_gate(params: GateParams, baseline_rev: str | None = None, root: Path = Path(".")) -> GateResult:
    """Parse the rules, read current (and baseline) metrics, judge. Never raises for problems
    a user can cause: they become the result's errors (exit code 2)."""
    try:
        rules = parse_rules(params)
    except GateError as exc:
        return GateResult(errors=(str(exc),), baseline_rev=baseline_rev)
    if not rules:
        return GateResult(errors=("no rules in params.yaml `gate` (rules, regressions): nothing to judge",),
                          baseline_rev=baseline_rev)
    needed = files_needed(rules)
    current, problems = read_current(list(needed), root)
    baseline = commit = None
    if baseline_rev is not None:
        try:
            commit, baseline, more = read_baseline(baseline_rev, needed, root)
        except GateError as exc:
            return GateResult(errors=(*problems, str(exc)), baseline_rev=baseline_rev)
        problems += more
    task, more = read_task(rules, root)
    result = evaluate_rules(rules, current, baseline, task, errors=problems + more)
    return replace(result, baseline_rev=baseline_rev, baseline_commit=commit)


def main(
    baseline: str | None = None,
    report: Path | None = None,
    json_out: Path | None = None,
    params_file: Path = PARAMS_PATH,
) -> tuple[GateResult, str]:
    """Run the gate in the current directory, write the report files; (result, markdown)."""
    try:
        params = load_params(params_file).gate
    except FitlineError as exc:
        result = GateResult(errors=(str(exc),), baseline_rev=baseline)
    else:
        result = run_gate(params, baseline, params_file.parent)
    markdown = render_markdown(result)
    if report is not None:
        write_text(report, markdown)
    if json_out is not None:
        write_json(json_out, result_json(result))
    return result, markdown
