"""The model-quality gate's rules and their judgement: pure functions on plain dicts.

Two kinds of rule, both naming a metric by its path. The first segment of a path names the
metrics file (`eval` -> metrics/eval.json, see METRICS_FILES), the rest is a dotted path into
its JSON (`eval.test.r2`, `eval.fit.verdict`, `export.parity_max_abs`).

- absolute: `PATH OP VALUE`, OP one of >=, <=, >, <, ==, !=. VALUE is a number (`0.85`,
  `1e-4`), or for == and != a bare word (`good`, `overfit+underfit`, `true`) or a quoted string.
- regression against a baseline revision: `better` is `lower` or `higher`, and the metric may
  worsen by at most `allowed = max(abs_tol, rel_tol * |baseline|)`:
  lower is better:  passes when current <= baseline + allowed
  higher is better: passes when current >= baseline - allowed

A rule with `when: regression|classification` is judged only for that task and skipped
otherwise, so one params.yaml can hold rules for both kinds of data.

Outcomes: every rule gives one Row with status pass, fail, error (cannot judge: metric or file
missing, wrong type, task unknown) or skip (no baseline given, or `when` names another task).
The gate exits 0 when nothing failed and nothing errored, 1 when a rule failed, and 2 when it
could not judge (errors win over failures: a missing metric must be fixed before the rest of
the verdict means anything). Missing metrics never pass, and a gate that judged nothing (no
rules, or every rule skipped) exits 2 rather than claiming a pass.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stages.core.contracts import METRICS_FILES
from stages.core.errors import FitlineError
from stages.core.params import Better, GateParams
from stages.core.params import RegressionRule as RegressionRuleParams

Status = Literal["pass", "fail", "error", "skip"]

OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
ORDERING_OPS = {">=", "<=", ">", "<"}

_PATH = r"[A-Za-z_][\w-]*(?:\.[\w-]+)+"
_RULE_RE = re.compile(rf"^\s*(?P<path>{_PATH})\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>.*?)\s*$")
_PATH_RE = re.compile(rf"^{_PATH}$")
# numbers by pattern, not float(): "nan", "inf" and "infinity" are words, not thresholds
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_WORD_RE = re.compile(r"^[A-Za-z_][\w+\-.]*$")


class GateError(FitlineError):
    """The gate cannot judge: a malformed rule, a missing metrics file, an unknown revision."""

    exit_code = 2


# ------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Threshold:
    """An absolute rule: `path op value`."""

    path: str
    op: str
    value: float | str
    text: str  # as written in params.yaml, for the report
    when: str | None = None

    @property
    def kind(self) -> str:
        return "absolute"


@dataclass(frozen=True)
class NoRegression:
    """A regression rule: `path` may worsen against the baseline by at most the tolerance."""

    path: str
    better: Better
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    when: str | None = None

    @property
    def kind(self) -> str:
        return "regression"

    @property
    def text(self) -> str:
        abs_tol, rel_tol = f"{self.abs_tol:g}", f"{self.rel_tol * 100:g}%"
        if self.abs_tol and self.rel_tol:
            return f"{self.better} is better, tol max({abs_tol}, {rel_tol})"
        return f"{self.better} is better, tol {rel_tol if self.rel_tol else abs_tol}"

    def allowed(self, baseline: float) -> float:
        return max(self.abs_tol, self.rel_tol * abs(baseline))


Rule = Threshold | NoRegression


def _check_path(path: str, where: str) -> None:
    if not _PATH_RE.match(path):
        raise GateError(f"{where}: metric path {path!r} must be FILE.KEY[.KEY...], e.g. eval.test.r2")
    prefix = path.split(".", 1)[0]
    if prefix not in METRICS_FILES:
        raise GateError(
            f"{where}: {path!r} starts with unknown metrics file {prefix!r} "
            f"(known: {', '.join(f'{k} = {v}' for k, v in METRICS_FILES.items())})"
        )


def parse_value(raw: str) -> float | str | None:
    """A rule's right-hand side: a number, a quoted string, or a bare word; None if it is neither."""
    if _NUMBER_RE.match(raw):
        return float(raw)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" and raw[0] not in raw[1:-1]:
        return raw[1:-1]
    if _WORD_RE.match(raw):
        return raw
    return None


def parse_threshold(text: str, where: str = "rule", when: str | None = None) -> Threshold:
    """Parse `PATH OP VALUE`; a GateError names the rule and what is wrong with it."""
    m = _RULE_RE.match(text)
    if not m or m["value"][:1] in ("<", ">", "=", "!"):  # `>==`, `=>`: an operator typo
        raise GateError(
            f"{where}: {text!r} is not PATH OP VALUE (OP one of {', '.join(OPS)}), e.g. 'eval.test.r2 >= 0.85'"
        )
    path, op, raw = m["path"], m["op"], m["value"]
    _check_path(path, f"{where} {text!r}")
    if not raw:
        raise GateError(f"{where}: {text!r} has no value after {op!r}")
    value = parse_value(raw)
    if value is None:
        raise GateError(f"{where}: {text!r}: {raw!r} is not a number, a bare word or a quoted string")
    if op in ORDERING_OPS and not isinstance(value, float):
        raise GateError(f"{where}: {text!r}: {op!r} needs a number, got {raw!r}")
    return Threshold(path=path, op=op, value=value, text=text.strip(), when=when)


def parse_rules(params: GateParams) -> list[Rule]:
    """All rules of the `gate` params section, parsed once; every malformed rule is reported."""
    rules: list[Rule] = []
    problems: list[str] = []
    for i, item in enumerate(params.rules):
        where = f"gate.rules[{i}]"
        text, when = (item, None) if isinstance(item, str) else (item.rule, item.when)
        try:
            rules.append(parse_threshold(text, where, when))
        except GateError as exc:
            problems.append(str(exc))
    for i, reg in enumerate(params.regressions):
        try:
            rules.append(parse_regression(reg, f"gate.regressions[{i}]"))
        except GateError as exc:
            problems.append(str(exc))
    if problems:
        raise GateError("; ".join(problems))
    return rules


def parse_regression(reg: RegressionRuleParams, where: str = "regression") -> NoRegression:
    _check_path(reg.metric, where)
    return NoRegression(reg.metric, reg.better, reg.abs_tol, reg.rel_tol, reg.when)


# ---------------------------------------------------------------------------------- lookups


class MetricMissing(LookupError):
    """The path does not lead to a value; the message says where it stopped."""


CI_BOUNDS = {"ci_low": "low", "ci_high": "high"}


def lookup(metrics: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path in {file prefix: parsed JSON}; list items by integer index.

    `<split>.<metric>.ci_low` / `.ci_high` name the bounds of the metric's confidence interval
    (stored as `<split>.ci.<metric>.low` / `.high` in eval.json)."""
    prefix, *keys = path.split(".")
    if len(keys) >= 3 and keys[-1] in CI_BOUNDS:
        keys = [*keys[:-2], "ci", keys[-2], CI_BOUNDS[keys[-1]]]
    if prefix not in metrics:
        raise MetricMissing(f"{METRICS_FILES.get(prefix, prefix)} not available")
    node: Any = metrics[prefix]
    for depth, key in enumerate(keys):
        here = ".".join([prefix, *keys[:depth]])
        if isinstance(node, Mapping):
            if key not in node:
                have = ", ".join(sorted(map(str, node))[:12]) or "nothing"
                raise MetricMissing(f"no {key!r} in {here} (has: {have})")
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise MetricMissing(f"{here} is a {type(node).__name__}, has no {key!r}")
    return node


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Row:
    """One rule's outcome, as shown in the report."""

    metric: str
    kind: str  # absolute | regression
    rule: str
    status: Status
    current: Any = None
    baseline: Any = None
    change: float | None = None
    change_pct: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class GateResult:
    rows: tuple[Row, ...] = ()
    errors: tuple[str, ...] = ()  # problems not tied to one rule (unreadable files, bad revision)
    baseline_rev: str | None = None
    baseline_commit: str | None = None
    task: str | None = None

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def judged(self) -> int:
        return sum(r.status in ("pass", "fail", "error") for r in self.rows)

    @property
    def exit_code(self) -> int:
        if self.errors or self.count("error") or self.count("pass") + self.count("fail") == 0:
            return 2
        return 1 if self.count("fail") else 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def _change(current: Any, baseline: Any) -> tuple[float | None, float | None]:
    if not (is_number(current) and is_number(baseline)):
        return None, None
    change = float(current) - float(baseline)
    pct = change / abs(baseline) * 100 if baseline and math.isfinite(baseline) else None
    return change, pct


def _skip_for_task(rule: Rule, task: str | None) -> tuple[Status, str] | None:
    """(status, detail) when the rule's `when` keeps it from being judged for this task."""
    if rule.when is None:
        return None
    if task is None:
        return "error", f"rule is for task {rule.when!r}, but the task is unknown (data/meta.json)"
    if task != rule.when:
        return "skip", f"only for {rule.when} (task is {task})"
    return None


def judge_threshold(rule: Threshold, current: Any) -> tuple[Status, str]:
    value = rule.value
    if isinstance(value, float):
        if not is_number(current):
            return "error", f"{rule.path} is {type(current).__name__} {current!r}, the rule needs a number"
        if not math.isfinite(current):
            return "fail", f"{rule.path} is {current}"
        ok = OPS[rule.op](float(current), value)
        return ("pass", "") if ok else ("fail", f"{current:.6g} is not {rule.op} {value:g}")
    # a word or string: compare as text; JSON true/false compare with the words true/false
    if isinstance(current, bool) and value in ("true", "false"):
        current_text = "true" if current else "false"
    elif isinstance(current, str):
        current_text = current
    else:
        return "error", f"{rule.path} is {type(current).__name__} {current!r}, the rule compares text"
    ok = OPS[rule.op](current_text, value)
    return ("pass", "") if ok else ("fail", f"{current_text!r} is not {rule.op} {value!r}")


def judge_regression(rule: NoRegression, current: Any, baseline: Any) -> tuple[Status, str]:
    if not is_number(current):
        return "error", f"{rule.path} is {type(current).__name__} {current!r}, needs a number"
    if not is_number(baseline) or not math.isfinite(baseline):
        return "error", f"baseline {rule.path} is {baseline!r}, needs a finite number"
    if not math.isfinite(current):
        return "fail", f"{rule.path} is {current}"
    allowed = rule.allowed(baseline)
    worse = current - baseline if rule.better == "lower" else baseline - current
    limit = f"allowed {allowed:.4g}"
    if worse <= allowed:
        return "pass", f"worse by {worse:.4g}, {limit}" if worse > 0 else ""
    return "fail", f"worse by {worse:.4g}, {limit}"


def _evaluate_one(
    rule: Rule, current: Mapping[str, Any], baseline: Mapping[str, Any] | None, task: str | None
) -> Row:
    row = dict(metric=rule.path, kind=rule.kind, rule=rule.text)
    cur = base = None
    have_base, base_missing = False, ""
    try:
        cur = lookup(current, rule.path)
    except MetricMissing as exc:
        cur_missing = f"missing: {exc}"
    else:
        cur_missing = ""
    if baseline is not None:
        try:
            base, have_base = lookup(baseline, rule.path), True
        except MetricMissing as exc:
            base_missing = f"missing in baseline: {exc}"
    change, pct = _change(cur, base)
    row.update(current=cur, baseline=base, change=change, change_pct=pct)

    skip = _skip_for_task(rule, task)
    if skip is not None:
        status, detail = skip
    elif cur_missing:
        status, detail = "error", cur_missing
    elif isinstance(rule, Threshold):
        status, detail = judge_threshold(rule, cur)
    elif baseline is None:
        status, detail = "skip", "no baseline"
    elif not have_base:
        status, detail = "error", base_missing
    else:
        status, detail = judge_regression(rule, cur, base)
    return Row(**row, status=status, detail=detail)


def evaluate_rules(
    rules: Iterable[Rule],
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    task: str | None = None,
    errors: Iterable[str] = (),
) -> GateResult:
    """Judge every rule. `current` and `baseline` map a file prefix ("eval") to its parsed JSON;
    a file that could not be read is simply absent (say why in `errors`). `baseline` None means
    no baseline revision was given: regression rules are skipped, absolute rules still run."""
    rows = tuple(_evaluate_one(rule, current, baseline, task) for rule in rules)
    return GateResult(rows=rows, errors=tuple(errors), task=task)


def files_needed(rules: Iterable[Rule]) -> dict[str, bool]:
    """{file prefix: whether a regression rule needs it from the baseline} for the given rules."""
    needed: dict[str, bool] = {}
    for rule in rules:
        prefix = rule.path.split(".", 1)[0]
        needed[prefix] = needed.get(prefix, False) or isinstance(rule, NoRegression)
    return needed

