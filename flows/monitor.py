"""The `monitor_incoming` flow: every batch file in a folder checked by `fitline monitor`'s code
(stages/serving/monitor.py), one task per file, the report recorded as a Prefect artifact, and
the run ended Failed when any batch drifted or is invalid. prefect.yaml deploys it on a
schedule as `fitline-monitor`.
"""

from __future__ import annotations

# first: Prefect reads its settings when it is first imported
import flows.prefect_env  # noqa: F401  # isort: skip

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed

from stages.core.contracts import INCOMING_DIR, REPORTS_DIR, TABLE_FORMATS
from stages.core.errors import FitlineError

BATCH_SUFFIXES = tuple(TABLE_FORMATS)


def batch_files(folder: Path) -> list[Path]:
    """The batch files in `folder` (CSV or Parquet), oldest name first."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in BATCH_SUFFIXES)


def report_markdown(name: str, outcome: str, report: dict[str, Any] | None, message: str) -> str:
    lines = [f"# fitline monitor: {name}", "", f"**{outcome}**", ""]
    if report:
        lines += [f"{report['rows']} rows; {len(report['columns'])} columns checked.", ""]
        lines += ["| column | drifted | detail |", "|---|---|---|"]
        lines += [f"| {c} | {'yes' if s['drifted'] else 'no'} | {s['detail']} |" for c, s in report["columns"].items()]
        if report.get("predictions"):
            p = report["predictions"]
            lines.append(f"| (predictions) | {'yes' if p['drifted'] else 'no'} | {p['detail']} |")
    if message:
        lines += ["", "```", message, "```"]
    return "\n".join(lines)


@task(name="monitor-batch", retries=0)
def monitor_file(path: str, root: str) -> dict[str, Any]:
    """One batch: its report written beside the others, and a markdown artifact of it."""
    from stages.serving.monitor import run_monitor

    name = Path(path).stem
    dest = Path(root) / REPORTS_DIR / "monitor" / f"{name}.json"
    try:
        report = run_monitor(path, dest, root)
        outcome, message = "no drift", ""
    except FitlineError as exc:
        report, outcome, message = None, ("cannot judge" if exc.exit_code == 2 else "drift or invalid data"), str(exc)
        if dest.exists():
            import json

            report = json.loads(dest.read_text())
    key = "fitline-monitor-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())[:60]
    create_markdown_artifact(report_markdown(name, outcome, report, message), key=key,
                             description=f"fitline monitor: {name}")
    return {"file": path, "outcome": outcome, "message": message}


@flow(name="fitline-monitor", log_prints=False)
def monitor_incoming(root: str = ".", folder: str = str(INCOMING_DIR)) -> Any:
    """Check every batch in `folder` (relative to `root`); Failed when any drifted or is invalid."""
    logger = get_run_logger()
    where = Path(root) / folder
    if not where.is_dir():
        return Failed(message=f"{where}: no such folder (put batches to check there)")
    files = batch_files(where)
    results = [monitor_file(str(p), root) for p in files]
    bad = [r for r in results if r["outcome"] != "no drift"]
    for r in results:
        logger.info("%s: %s", Path(r["file"]).name, r["outcome"])
    if bad:
        return Failed(message=f"{len(bad)} of {len(results)} batch(es) failed the checks: "
                              + "; ".join(f"{Path(r['file']).name} ({r['outcome']})" for r in bad))
    return Completed(message=f"{len(results)} batch(es), no drift")
