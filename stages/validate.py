"""Stage `validate`: Great Expectations suites on every split; bad data stops the pipeline here.

`run(params, frames, meta)` builds one suite per split (stages.validation.expectations) plus a cross-split
leakage suite, validates each split as one batch of one ephemeral GX context (a wide split's
feature checks on a column profile, stages.validation.profile), adds the class balance check GX
has no expectation for, and returns the report (pure: no files). Data in the raw layout (meta.json
`columns`: user tables, the mixed kind) has its gaps, categories, outliers and duplicate rows
judged against train's with tolerances instead (stages.validation.raw, raw_checks, duplicates);
what is tolerated but worth knowing (a few outliers, rows shared as often as the table repeats
its own) is logged and listed as `warnings`.

`main()` reads data/, writes reports/validation.json and the GX Data Docs site under
reports/data_docs/, and raises ValidationFailed (exit 1, one line per failed check on stderr)
when anything failed. The report and the docs are written on failure too, since they are the
diagnosis; DVC does not record a failed stage in dvc.lock and runs nothing downstream of it,
so `train` (which depends on reports/validation.json) never runs on data that failed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import META_PATH, Meta

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


from stages.core.contracts import (  # noqa: E402
    DATA_DIR,
    DATA_DOCS_DIR,
    SPLITS,
    VALIDATION_REPORT_PATH,
    load_meta,  # noqa: E402
)
from stages.core.errors import DataError, ValidationFailed, run_main  # noqa: E402
from stages.core.io import write_json  # noqa: E402
from stages.core.params import ValidateParams, load_params  # noqa: E402
from stages.data.splits import read_split_frame  # noqa: E402
from stages.validation.checks import class_balance_failures, leakage_detail, row_hashes
from stages.validation.duplicates import validate_leakage
from stages.validation.expectations import HASH_COLUMN, leakage_expectation, reference_stats, split_expectations  # noqa: E402
from stages.validation.gx import BATCH_BYTES, _fast_decimal_scan, make_context, validate_frame, validate_split
from stages.validation.profile import WIDE_COLUMNS, in_suite_order, profiled_columns, validate_profile
from stages.validation.raw import RawReference, raw_references, reference_report
from stages.validation.raw_checks import validate_raw_columns
from stages.validation.report import describe_failure, failure_message, jsonable  # noqa: E402

log = logging.getLogger(__name__)


_fast_decimal_scan()


def _section(checks: int, failures: list[dict[str, Any]], rows: int | None = None) -> dict[str, Any]:
    section = {"success": not failures, "checks": checks, "failed": failures}
    if rows is not None:
        section["rows"] = rows
    return section


def validate_one_split(context: Any, split: str, frame: pd.DataFrame, meta: Meta, params: ValidateParams,
                       refs: dict[str, Any], batch_bytes: int, wide_columns: int) -> dict[str, Any]:
    """One split's report section: its GX suite and, for a wide split, its column profile."""
    profiled = profiled_columns(frame, list(meta.feature_names), wide_columns)
    suite = split_expectations(split, frame, meta, params, refs, profiled)
    checks, failed_results = validate_split(context, split, frame, suite, batch_bytes)
    failed = [describe_failure(split, er, frame) for er in failed_results]
    if profiled:
        profile_checks, profile_failed = validate_profile(context, split, frame, profiled, refs, params, batch_bytes)
        checks += profile_checks
        failed = in_suite_order(failed + profile_failed, [*meta.feature_names, meta.target])
    return _section(checks, failed, rows=len(frame))


def validate_raw_split(context: Any, split: str, frame: pd.DataFrame, meta: Meta, params: ValidateParams,
                       refs: dict[str, RawReference], batch_bytes: int) -> dict[str, Any]:
    """One split of the raw layout: the GX suite's table checks (and a classification target's),
    then every feature (and a regression target) on the raw column profile; tolerated outliers
    are the section's `warnings`."""
    columns = [*meta.feature_names, *([meta.target] if meta.task == "regression" else [])]
    suite = split_expectations(split, frame, meta, params, {}, profiled=columns)
    checks, failed_results = validate_split(context, split, frame, suite, batch_bytes)
    failed = [describe_failure(split, er, frame) for er in failed_results]
    column_checks, column_failed, warnings = validate_raw_columns(context, split, frame, refs, params, meta.target)
    failed = in_suite_order(failed + column_failed, [*meta.feature_names, meta.target])
    section = _section(checks + column_checks, failed, rows=len(frame))
    section["warnings"] = warnings
    return section


def leakage_section(context: Any, frames: dict[str, pd.DataFrame], meta: Meta,
                    params: ValidateParams) -> dict[str, Any]:
    """Rows in more than one split: any, in the numeric layout; in the raw layout, more than the
    table's own duplicate rows predict (stages.validation.duplicates)."""
    columns = [c for c in [*meta.feature_names, meta.target] if all(c in f.columns for f in frames.values())]
    if meta.columns is not None:
        checks, failed, warnings, table = validate_leakage(context, frames, columns, params)
        return {**_section(checks, failed), "warnings": warnings, "shared_rows": table}
    hashes = {s: row_hashes(frames[s], columns) for s in SPLITS}
    table = pd.DataFrame({HASH_COLUMN: np.concatenate(list(hashes.values()))})
    results = validate_frame(context, "leakage", table, [leakage_expectation()])
    failed = [describe_failure("all", er, table) for er in results.results if not er.success]
    for failure in failed:
        failure["column"] = f"rows ({', '.join(columns)})" if len(columns) <= 3 else f"rows ({len(columns)} columns)"
        failure["observed"] = leakage_detail(hashes) or failure["observed"]
    return _section(len(results.results), failed)


def run(params: ValidateParams, frames: dict[str, pd.DataFrame], meta: Meta, context: Any = None,
        batch_bytes: int = BATCH_BYTES, wide_columns: int = WIDE_COLUMNS) -> dict[str, Any]:
    """Validate the three splits; return the report. `context`: a GX context (e.g. one with a
    Data Docs site, see make_context); a fresh in-memory one by default. `batch_bytes`: see
    expectation_batches. `wide_columns`: see profiled_columns.

    meta.json without `columns` (numeric layout) gets the strict suites; with them (raw layout:
    user tables, the mixed kind) each column is judged against train with tolerances
    (stages.validation.raw)."""
    missing = [s for s in SPLITS if s not in frames]
    if missing:
        raise DataError(f"validate: split(s) {', '.join(missing)} not given")
    needed = ["rows"] + (["classes"] if meta.task == "classification" else [])
    absent = [k for k in needed if not getattr(meta, k)]
    if absent:
        raise DataError(f"{META_PATH}: missing key(s) {', '.join(absent)} (re-run the generate stage)")
    context = context if context is not None else make_context()
    raw = meta.columns is not None
    refs = raw_references(frames["train"], meta, params) if raw else reference_stats(params, frames["train"], meta)
    report: dict[str, Any] = {"task": meta.task, "layout": "raw" if raw else "numeric", "splits": {}, "cross_split": {}}

    for split in SPLITS:
        report["splits"][split] = (
            validate_raw_split(context, split, frames[split], meta, params, refs, batch_bytes) if raw
            else validate_one_split(context, split, frames[split], meta, params, refs, batch_bytes, wide_columns))

    if meta.task == "classification":
        for failure in class_balance_failures(frames, meta, params.class_balance_tol):
            section = report["splits"][failure["split"]]
            section["failed"].append(failure)
            section["success"] = False

    if params.check_leakage:
        report["cross_split"]["leakage"] = leakage_section(context, frames, meta, params)

    report["reference"] = reference_report(refs) if raw else {
        col: {"low": r.low, "high": r.high, "bounds_from": r.bounds_from, "mean": r.mean, "std": r.std}
        for col, r in refs.items()}
    sections = [*report["splits"].values(), *report["cross_split"].values()]
    report["success"] = all(s["success"] for s in sections)
    report["failed_checks"] = sum(len(s["failed"]) for s in sections)
    report["warnings"] = sum(len(s.get("warnings", [])) for s in sections)
    return jsonable(report)


def _replace_dir(src: Path, dest: Path) -> None:
    """Put the freshly built `src` in place of `dest` (rename: never a half-built site at `dest`)."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    src.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def main(data_dir: Path = DATA_DIR, report_path: Path = VALIDATION_REPORT_PATH, docs_dir: Path = DATA_DOCS_DIR) -> dict[str, Any]:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    params = load_params().validate_params
    meta = load_meta(data_dir)
    frames = {s: read_split_frame(s, data_dir) for s in SPLITS}
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{docs_dir.name}.", dir=docs_dir.parent))
    try:
        context = make_context(staging)
        report = run(params, frames, meta, context)
        context.build_data_docs()
        _replace_dir(staging, docs_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(report_path, report)
    if not report["success"]:
        raise ValidationFailed(failure_message(report, report_path))
    log.info("all checks passed (%s%s); report %s, data docs %s/index.html",
             ", ".join(f"{s}: {v['checks']}" for s, v in report["splits"].items()),
             f"; {report['warnings']} warning(s)" if report["warnings"] else "", report_path, docs_dir)
    return report


if __name__ == "__main__":
    run_main(main, "validate")
