"""Stage `validate`: Great Expectations suites on every split; bad data stops the pipeline here.

`run(params, frames, meta)` builds one suite per split (stages.expectations) plus a cross-split
leakage suite, validates each split as one batch of one ephemeral GX context, adds the class
balance check GX has no expectation for, and returns the report (pure: no files).

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
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.util as gx_util  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from stages.artifacts import write_json  # noqa: E402
from stages.dataset import DATA_DIR, SPLITS, load_meta, read_split_frame  # noqa: E402
from stages.errors import DataError, ValidationFailed, run_main  # noqa: E402
from stages.expectations import (  # noqa: E402
    HASH_COLUMN,
    is_numeric,
    leakage_expectation,
    reference_stats,
    split_expectations,
)
from stages.params import ValidateParams, load_params  # noqa: E402
from stages.validation_report import describe_failure, failure_message, jsonable  # noqa: E402

log = logging.getLogger(__name__)

REPORT_PATH = Path("reports/validation.json")
DOCS_DIR = Path("reports/data_docs")
# the most memory GX's float64 copy of one batch may take: bigger splits run a few columns at a time
BATCH_BYTES = 256 * 2**20


# ------------------------------------------------------------------------------- GX context


def _fast_decimal_scan() -> None:
    """Before every column mean/std/sum, GX 1.24 looks for decimal.Decimal objects with a Python
    loop over all values (about 1 s per million rows per check). An array of a numeric dtype
    cannot hold Decimal objects, so only object arrays need the scan; results are unchanged."""
    scan = gx_util.does_ndarray_contain_decimal_dtype
    if getattr(scan, "fitline_fast", False):
        return

    def does_ndarray_contain_decimal_dtype(data: Any) -> bool:
        if isinstance(data, np.ndarray) and data.dtype != object:
            return False
        return scan(data)

    does_ndarray_contain_decimal_dtype.fitline_fast = True  # type: ignore[attr-defined]
    gx_util.does_ndarray_contain_decimal_dtype = does_ndarray_contain_decimal_dtype


_fast_decimal_scan()


def make_context(docs_dir: Path | None = None) -> Any:
    """An in-memory GX context: nothing written to disk except the Data Docs site, if asked for."""
    sites = {}
    if docs_dir is not None:
        sites["local_site"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def gx_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with float columns as float64 and integer columns as int64.

    GX 1.24 compares values with bounds vectorised only for exactly those two dtypes; a float32
    column goes through a Python function per value (20x slower). The cast keeps every value and
    the kind of dtype (float stays float, integer stays integer), which is all the dtype check
    looks at.
    """
    casts = {}
    for col, dtype in frame.dtypes.items():
        if not isinstance(dtype, np.dtype):
            continue  # pandas extension dtypes (strings, nullable) are left as they are
        if dtype.kind == "f" and dtype != np.float64:
            casts[col] = np.float64
        elif (dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize < 8)) and dtype != np.int64:
            casts[col] = np.int64
    return frame.astype(casts) if casts else frame


def _release_batches(source: Any) -> None:
    """GX's pandas engine keeps every batch it loaded (our float64 copy of the frame) for the
    life of its data source: 1.4 GB for a 7M-row split, still held while the next split ran."""
    manager = source.get_execution_engine().batch_manager
    manager.reset_batch_cache()
    manager.batch_data_cache.clear()


def _validate_frame(context: Any, name: str, frame: pd.DataFrame, expectations: list[Any], cast: bool = True) -> Any:
    """Run one suite on one dataframe (one batch); the result is also stored for Data Docs.
    `cast`: give GX the float64/int64 copy it checks values fastest on (gx_frame); suites that
    look at no values (the table's columns and row count) take the frame as it is."""
    frame = gx_frame(frame) if cast else frame
    source = context.data_sources.add_or_update_pandas(name="frames")
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all rows")
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    try:
        # the std of a column holding inf is NaN, with a numpy warning on stderr; the report says it
        with np.errstate(all="ignore"):
            return definition.run(batch_parameters={"dataframe": frame}, result_format="BASIC")
    finally:
        _release_batches(source)


class Batch(NamedTuple):
    """One GX run of a split's suite: `columns` of the frame (None: the whole frame), cast to
    float64/int64 for GX (gx_frame) unless the batch looks at no values (table checks)."""

    name: str
    columns: list[str] | None
    expectations: list[Any]
    cast: bool = True


def expectation_batches(split: str, frame: pd.DataFrame, expectations: list[Any],
                        max_bytes: int = BATCH_BYTES) -> list[Batch]:
    """How to run one split's suite.

    A split whose float64 copy fits in `max_bytes` is one batch (one Data Docs page). A bigger
    one runs as a batch of the table checks (columns, row count) on the frame as it is, then
    batches of a few columns each: GX's float64 copy is then of those columns only, so memory
    stays the data plus `max_bytes`, not the data plus twice the data."""
    if len(frame) * 8 * max(len(frame.columns), 1) <= max_bytes:
        return [Batch(split, None, expectations)]
    table = [e for e in expectations if getattr(e, "column", None) is None]
    by_column: dict[str, list[Any]] = {}
    for e in expectations:
        if getattr(e, "column", None) is not None:
            by_column.setdefault(e.column, []).append(e)
    per_batch = max(1, max_bytes // (len(frame) * 8))
    columns = list(by_column)
    batches = [Batch(f"{split} table", None, table, cast=False)] if table else []
    for i in range(0, len(columns), per_batch):
        group = columns[i:i + per_batch]
        name = f"{split} columns {group[0]}" + (f"..{group[-1]}" if len(group) > 1 else "")
        batches.append(Batch(name, group, [e for c in group for e in by_column[c]]))
    return batches


def validate_split(context: Any, split: str, frame: pd.DataFrame, expectations: list[Any],
                   max_bytes: int = BATCH_BYTES) -> tuple[int, list[Any]]:
    """Run a split's suite in batches (expectation_batches); return (checks run, failed results)."""
    checks, failed = 0, []
    for batch in expectation_batches(split, frame, expectations, max_bytes):
        batch_frame = frame if batch.columns is None else frame[batch.columns]
        results = _validate_frame(context, batch.name, batch_frame, batch.expectations, cast=batch.cast)
        checks += len(results.results)
        failed += [er for er in results.results if not er.success]
    return checks, failed


# ------------------------------------------------------------------------------ cross-split


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One 64-bit hash per distinct row of `columns` (collisions: ~3e-8 chance in 1M rows)."""
    return pd.unique(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy())


def leakage_detail(hashes: dict[str, np.ndarray]) -> str:
    """Which splits share rows, e.g. '3 rows of val also in train'."""
    names = list(hashes)
    shared = [
        f"{n} row{'s' if n != 1 else ''} of {b} also in {a}"
        for i, a in enumerate(names) for b in names[i + 1:]
        if (n := len(np.intersect1d(hashes[a], hashes[b], assume_unique=True)))
    ]
    return "; ".join(shared)


def class_balance_failures(frames: dict[str, pd.DataFrame], meta: dict[str, Any], tol: float) -> list[dict[str, Any]]:
    """Each class's share of val and test within `tol` of its share of train.

    generate stratifies splits on the label, so shares agree up to rounding; one row's worth
    (1 / rows) is added to the tolerance so tiny splits do not fail on rounding alone.
    """
    target, k = meta["target"], len(meta["classes"])

    def shares(frame: pd.DataFrame) -> np.ndarray | None:
        if target not in frame.columns or not is_numeric(frame[target]):
            return None
        labels = frame[target].dropna().to_numpy()
        labels = labels[(labels >= 0) & (labels < k)].astype(np.int64)  # others fail `labels`
        return np.bincount(labels, minlength=k) / len(labels) if len(labels) else None

    train = shares(frames["train"])
    failures = []
    for split in ("val", "test"):
        share = shares(frames[split])
        if train is None or share is None:
            continue
        allowed = tol + 1 / len(frames[split])
        off = [c for c in range(k) if abs(share[c] - train[c]) > allowed]
        if off:
            failures.append({
                "split": split, "check": "class_balance", "expectation": "class_balance (pandas)",
                "column": target,
                "expected": f"each class's share within {allowed:.3g} of train's "
                            f"({', '.join(f'{c}: {train[c]:.3f}' for c in range(k))})",
                "observed": ", ".join(f"class {c} {share[c]:.3f} vs train {train[c]:.3f}" for c in off),
                "result": {"shares": share.tolist(), "train_shares": train.tolist()},
            })
    return failures


def _section(checks: int, failures: list[dict[str, Any]], rows: int | None = None) -> dict[str, Any]:
    section = {"success": not failures, "checks": checks, "failed": failures}
    if rows is not None:
        section["rows"] = rows
    return section


def run(params: ValidateParams, frames: dict[str, pd.DataFrame], meta: dict[str, Any],
        context: Any = None, batch_bytes: int = BATCH_BYTES) -> dict[str, Any]:
    """Validate the three splits; return the report. `context`: a GX context (e.g. one with a
    Data Docs site, see make_context); a fresh in-memory one by default. `batch_bytes`: see
    expectation_batches."""
    missing = [s for s in SPLITS if s not in frames]
    if missing:
        raise DataError(f"validate: split(s) {', '.join(missing)} not given")
    needed = ["rows"] + (["classes"] if meta["task"] == "classification" else [])
    absent = [k for k in needed if not meta.get(k)]
    if absent:
        raise DataError(f"data/meta.json: missing key(s) {', '.join(absent)} (re-run the generate stage)")
    context = context if context is not None else make_context()
    refs = reference_stats(params, frames["train"], meta)
    report: dict[str, Any] = {"task": meta["task"], "splits": {}, "cross_split": {}}

    for split in SPLITS:
        frame = frames[split]
        suite = split_expectations(split, frame, meta, params, refs)
        checks, failed_results = validate_split(context, split, frame, suite, batch_bytes)
        failed = [describe_failure(split, er, frame) for er in failed_results]
        report["splits"][split] = _section(checks, failed, rows=len(frame))

    if meta["task"] == "classification":
        for failure in class_balance_failures(frames, meta, params.class_balance_tol):
            section = report["splits"][failure["split"]]
            section["failed"].append(failure)
            section["success"] = False

    if params.check_leakage:
        columns = [c for c in [*meta["feature_names"], meta["target"]] if all(c in f.columns for f in frames.values())]
        hashes = {s: row_hashes(frames[s], columns) for s in SPLITS}
        table = pd.DataFrame({HASH_COLUMN: np.concatenate(list(hashes.values()))})
        results = _validate_frame(context, "leakage", table, [leakage_expectation()])
        failed = [describe_failure("all", er, table) for er in results.results if not er.success]
        for failure in failed:
            failure["column"] = f"rows ({', '.join(columns)})" if len(columns) <= 3 else f"rows ({len(columns)} columns)"
            failure["observed"] = leakage_detail(hashes) or failure["observed"]
        report["cross_split"]["leakage"] = _section(len(results.results), failed)

    report["reference"] = {col: {"low": r.low, "high": r.high, "bounds_from": r.bounds_from,
                                 "mean": r.mean, "std": r.std} for col, r in refs.items()}
    sections = [*report["splits"].values(), *report["cross_split"].values()]
    report["success"] = all(s["success"] for s in sections)
    report["failed_checks"] = sum(len(s["failed"]) for s in sections)
    return jsonable(report)


# ------------------------------------------------------------------------------------ main


def _replace_dir(src: Path, dest: Path) -> None:
    """Put the freshly built `src` in place of `dest` (rename: never a half-built site at `dest`)."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    src.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def main(data_dir: Path = DATA_DIR, report_path: Path = REPORT_PATH, docs_dir: Path = DOCS_DIR) -> dict[str, Any]:
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
    log.info("all checks passed (%s); report %s, data docs %s/index.html",
             ", ".join(f"{s}: {v['checks']}" for s, v in report["splits"].items()), report_path, docs_dir)
    return report


if __name__ == "__main__":
    run_main(main, "validate")
