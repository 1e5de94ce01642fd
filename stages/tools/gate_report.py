"""The gate's outputs: a markdown report for people (and PR comments) and a JSON result.

Both are pure renderings of a GateResult; nothing here reads files or runs git.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from stages.core.io import jsonable
from stages.tools.gate_rules import GateResult, Row

VERDICT = {0: "PASSED", 1: "FAILED", 2: "CANNOT JUDGE"}
STATUS = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ cannot judge", "skip": "➖ skipped"}


def verdict_line(result: GateResult) -> str:
    """The one-line summary on top of the report."""
    code = result.exit_code
    judged = result.judged
    failed, errored, skipped = result.count("fail"), result.count("error"), result.count("skip")
    plural = "rule" if judged == 1 else "rules"
    if code == 0:
        summary = f"all {judged} {plural} passed"
    elif code == 1:
        summary = f"{failed} of {judged} {plural} failed"
    elif errored:
        summary = f"{errored} of {judged} {plural} could not be judged"
        summary += f", {failed} failed" if failed else ""
    elif result.errors:
        summary = result.errors[0] if len(result.errors) == 1 else f"{len(result.errors)} problems, see below"
    else:
        return f"**Model quality gate: {VERDICT[code]}** — no rule was judged ({skipped} skipped)"
    if skipped:
        summary += f" ({skipped} skipped)"
    return f"**Model quality gate: {VERDICT[code]}** — {summary}"


def fmt_value(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int | float):
        return f"{x:.4g}"
    return str(x)


def fmt_change(row: Row) -> str:
    if row.change is None:
        return "—"
    text = f"{row.change:+.4g}"
    if row.change_pct is not None:
        text += f" ({row.change_pct:+.1f}%)"
    return text


def _cell(text: str) -> str:
    # a pipe would end the table cell; newlines would end the row
    return text.replace("|", "\\|").replace("\n", " ")


def _rule_cell(row: Row) -> str:
    if row.kind == "absolute":
        # the path is in the metric column already: show only "op value"
        rule = row.rule[len(row.metric):].strip() if row.rule.startswith(row.metric) else row.rule
        return f"`{rule}`"
    return row.rule


def render_markdown(result: GateResult) -> str:
    """The report: verdict line, where the baseline came from, the table, then the errors."""
    lines = [verdict_line(result), ""]
    if not result.rows and len(result.errors) == 1:
        return "\n".join(lines)  # the verdict line already says what is wrong
    if result.baseline_rev:
        commit = f" (`{result.baseline_commit[:10]}`)" if result.baseline_commit else ""
        lines.append(f"Baseline: `{result.baseline_rev}`{commit}; current: the workspace's metrics.")
    else:
        lines.append("No baseline revision given: regression rules were skipped.")
    if result.task:
        lines[-1] += f" Task: {result.task}."
    lines.append("")
    if result.rows:
        lines += [
            "| Metric | Baseline | Current | Change | Rule | Result |",
            "|---|---:|---:|---:|---|---|",
        ]
        for row in result.rows:
            status = STATUS[row.status] + (f": {row.detail}" if row.detail else "")
            cells = [f"`{row.metric}`", fmt_value(row.baseline), fmt_value(row.current),
                     fmt_change(row), _rule_cell(row), status]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    if result.errors:
        lines.append("Problems:")
        lines += [f"- {_cell(e)}" for e in result.errors]
        lines.append("")
    return "\n".join(lines)


def result_json(result: GateResult) -> dict[str, Any]:
    """{passed, exit_code, verdict, baseline, task, rows, errors} as plain JSON types."""
    return jsonable({
        "passed": result.passed,
        "exit_code": result.exit_code,
        "verdict": VERDICT[result.exit_code],
        "summary": verdict_line(result).split(" — ", 1)[-1],
        "baseline": (
            {"rev": result.baseline_rev, "commit": result.baseline_commit} if result.baseline_rev else None
        ),
        "task": result.task,
        "rows": [asdict(r) for r in result.rows],
        "errors": list(result.errors),
    })
