"""Stage `generate`: synthetic data with known ground truth, or a user CSV/Parquet file, split
into train/val/test parquet files plus data/meta.json.

Synthetic rows are generated and written in chunks of `data.chunk_rows`, so memory stays
bounded however many rows are asked for (only per-row labels and split ids are held whole).
The same params give byte-identical files. The numeric kinds (linear, friedman,
classification) write float32 features; a user file and kind mixed write the raw columns and the
schema meta.json records (stages/data/splits.py describes both layouts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.contracts import DATA_DIR, SPLITS, Meta, write_meta
from stages.core.errors import run_main
from stages.core.params import DataKind, DataParams, load_params
from stages.data.ingest import from_file
from stages.data.mixed import mixed_data
from stages.data.splits import split_writers
from stages.data.synthetic import synthetic_data

log = logging.getLogger(__name__)


def numeric_data(p: DataParams, writers_factory: Any) -> dict[str, Any]:
    """The numeric synthetic kinds: float32 features x0..x{n-1} and target y (the numeric layout)."""
    names = [f"x{i}" for i in range(p.n_features)]
    task = "classification" if p.kind == "classification" else "regression"
    info = synthetic_data(p, writers_factory(names, "y", task), names)
    return {**info, "names": names, "target": "y"}


# every synthetic kind's generator, keyed by the DataKind Literal (tests/data checks the keys)
SYNTHETIC: dict[DataKind, Callable[[DataParams, Any], dict[str, Any]]] = {
    "linear": numeric_data, "friedman": numeric_data, "classification": numeric_data, "mixed": mixed_data,
}


def run(p: DataParams, out_dir: Path = DATA_DIR) -> Meta:
    """Generate or ingest the data, write the three splits and meta.json; return the metadata."""
    out_dir = Path(out_dir)
    with split_writers(out_dir) as factory:
        info = from_file(p, factory) if p.source == "file" else SYNTHETIC[p.kind](p, factory)
    split_of = info.pop("split_of")
    labels = info.pop("labels")
    names = info.pop("names")
    class_counts = None
    if labels is not None:
        class_counts = {s: np.bincount(labels[split_of == i], minlength=len(info["classes"])).tolist()
                        for i, s in enumerate(SPLITS)}
    meta = Meta(
        source=p.source,
        kind=p.kind if p.source == "synthetic" else "file",
        path=p.path if p.source == "file" else None,
        seed=p.seed,
        feature_names=names,
        n_features=len(names),
        rows={s: int((split_of == i).sum()) for i, s in enumerate(SPLITS)},
        class_counts=class_counts,
        **info,
    )
    write_meta(meta, out_dir)
    log.info("wrote %s rows (%s) to %s", sum(meta.rows.values()), meta.rows, out_dir)
    return meta


def main() -> None:
    params = load_params()
    run(params.data)


if __name__ == "__main__":
    run_main(main, "generate")
