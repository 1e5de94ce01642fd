"""Great Expectations plumbing: an ephemeral context (optionally with a Data Docs site), the
frame GX sees, and a split validated in batches of columns so memory stays bounded."""


from __future__ import annotations

import os
from collections.abc import Collection
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

# the most memory GX's float64 copy of one batch may take: bigger splits run a few columns at a time
BATCH_BYTES = 256 * 2**20


def _fast_decimal_scan() -> None:
    """Before every column mean/std/sum, GX 1.24 looks for decimal.Decimal objects with a Python
    loop over all values, seconds per million rows per check. An array of a numeric dtype
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


def gx_dtype(dtype: Any) -> Any:
    """The dtype GX is given a column of `dtype` in (gx_frame): float64 for floats, int64 for
    integers up to 32 bits (and int64, uint64), anything else as it is."""
    if not isinstance(dtype, np.dtype):
        return dtype  # pandas extension dtypes (strings, nullable) are left as they are
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize < 8):
        return np.dtype(np.int64)
    return dtype


def gx_frame(frame: pd.DataFrame, columns: Collection[str] | None = None) -> pd.DataFrame:
    """`frame` with float columns as float64 and integer columns as int64 (of `columns` only, if
    given: the others are left as they are).

    GX 1.24 compares values with bounds vectorised only for exactly those two dtypes; a float32
    column goes through a Python function per value, an order of magnitude slower. The cast keeps every value and
    the kind of dtype (float stays float, integer stays integer), which is all the dtype check
    looks at.
    """
    casts = {col: cast for col, dtype in frame.dtypes.items()
             if (columns is None or col in columns) and (cast := gx_dtype(dtype)) != dtype}
    if not casts or len(casts) == len(frame.columns):
        return frame.astype(casts) if casts else frame
    cast = frame.copy(deep=False)  # astype(dict) copies every column, cast or not: slow on wide frames
    for col, dtype in casts.items():
        cast[col] = frame[col].astype(dtype)
    return cast


def _release_batches(source: Any) -> None:
    """GX's pandas engine keeps every batch it loaded (our float64 copy of the frame) for the
    life of its data source, still held while the next split runs."""
    manager = source.get_execution_engine().batch_manager
    manager.reset_batch_cache()
    manager.batch_data_cache.clear()


def validate_frame(context: Any, name: str, frame: pd.DataFrame, expectations: list[Any], cast: bool = True,
                   result_format: str = "BASIC") -> Any:
    """Run one suite on one dataframe (one batch); the result is also stored for Data Docs.
    `cast`: give GX the float64/int64 copy it checks values fastest on (gx_frame); suites that
    look at no values (the table's columns and row count) take the frame as it is.
    `result_format`: COMPLETE also lists the index of every unexpected row."""
    # only the columns an expectation looks at: a table check on a wide frame needs no copy of it
    frame = gx_frame(frame, {getattr(e, "column", None) for e in expectations}) if cast else frame
    source = context.data_sources.add_or_update_pandas(name="frames")
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all rows")
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    try:
        # the std of a column holding inf is NaN, with a numpy warning on stderr; the report says it
        with np.errstate(all="ignore"):
            return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
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
        results = validate_frame(context, batch.name, batch_frame, batch.expectations, cast=batch.cast)
        checks += len(results.results)
        failed += [er for er in results.results if not er.success]
    return checks, failed
