"""Stage `generate`: synthetic data with known ground truth, or a user CSV/Parquet file, split
into train/val/test parquet files plus data/meta.json.

Synthetic rows are generated and written in chunks of `data.chunk_rows`, so memory stays
bounded however many rows are asked for (only per-row labels and split ids are held whole).
The same params give byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stages.artifacts import atomic_path, write_json
from stages.errors import DataError, run_main
from stages.params import DataParams, load_params

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DATA_DIR = Path("data")
# user files live here: dvc.yaml lists it as a dependency of generate (data/raw/README.md)
RAW_DIR = DATA_DIR / "raw"
# an integer target with at most this many distinct values is taken as class labels (task auto)
MAX_AUTO_CLASSES = 20


# ------------------------------------------------------------------------------ splitting


def _split_counts(n: int, split: Any) -> tuple[int, int, int]:
    n_train = round(n * split.train)
    n_val = round(n * split.val)
    return n_train, n_val, n - n_train - n_val


def assign_splits(n: int, split: Any, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
    """Split id per row (0 train, 1 val, 2 test): seeded, disjoint, stratified when labels given."""
    split_of = np.empty(n, dtype=np.int8)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for idx in groups:
        ids = np.repeat(np.array([0, 1, 2], dtype=np.int8), _split_counts(len(idx), split))
        split_of[idx] = ids[rng.permutation(len(idx))]
    return split_of


# ---------------------------------------------------------------------------- ground truth


def _linear_truth(p: DataParams, rng: np.random.Generator) -> dict[str, Any]:
    informative = np.sort(rng.choice(p.n_features, p.n_informative, replace=False))
    coef = np.zeros(p.n_features)
    coef[informative] = rng.choice([-1.0, 1.0], p.n_informative) * rng.uniform(1.0, 3.0, p.n_informative)
    return {"coefficients": coef.tolist(), "intercept": float(rng.uniform(-1, 1)),
            "informative": informative.tolist()}


def _class_truth(p: DataParams, rng: np.random.Generator) -> dict[str, Any]:
    """Gaussian clusters with identity covariance; means scaled to a mean pairwise distance class_sep."""
    means = np.zeros((p.n_classes, p.n_features))
    means[:, : p.n_informative] = rng.standard_normal((p.n_classes, p.n_informative))
    dists = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=-1)
    means *= p.class_sep / dists[np.triu_indices(p.n_classes, 1)].mean()
    weights = p.class_weights or tuple([1.0 / p.n_classes] * p.n_classes)
    return {"class_means": means.tolist(), "class_weights": list(weights),
            "informative": list(range(p.n_informative))}


def friedman1(x: np.ndarray) -> np.ndarray:
    """Friedman #1: only the first five features matter."""
    x = x.astype(np.float64)
    return (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2
            + 10 * x[:, 3] + 5 * x[:, 4])


def class_posterior(x: np.ndarray, truth: dict[str, Any], noise: float) -> np.ndarray:
    """P(observed label | x) under the generating model: Gaussian posterior mixed with label flips."""
    means = np.asarray(truth["class_means"])
    logits = x.astype(np.float64) @ means.T - 0.5 * (means**2).sum(1) + np.log(truth["class_weights"])
    logits -= logits.max(1, keepdims=True)
    post = np.exp(logits)
    post /= post.sum(1, keepdims=True)
    return (1 - noise) * post + noise / means.shape[0]


# ------------------------------------------------------------------------------ synthetic


def _synthetic_chunks(p: DataParams, truth: dict[str, Any], y_true: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (features float32, regression target or None) per chunk, each from its own seeded stream."""
    for c, start in enumerate(range(0, p.n_samples, p.chunk_rows)):
        rows = min(p.chunk_rows, p.n_samples - start)
        rng = np.random.default_rng([p.seed, 2, c])
        if p.kind == "classification":
            means = np.asarray(truth["class_means"], dtype=np.float32)
            x = means[y_true[start : start + rows]] + rng.standard_normal((rows, p.n_features), dtype=np.float32)
            yield x, None
            continue
        if p.kind == "friedman":
            x = rng.random((rows, p.n_features), dtype=np.float32)
            signal = friedman1(x)
        else:
            x = rng.standard_normal((rows, p.n_features), dtype=np.float32)
            signal = x.astype(np.float64) @ np.asarray(truth["coefficients"]) + truth["intercept"]
        y = signal + p.noise * rng.standard_normal(rows)
        yield x, y.astype(np.float32)


def _synthetic(p: DataParams, writers: dict[str, pq.ParquetWriter], names: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng([p.seed, 1])
    y_true = y_obs = None
    if p.kind == "classification":
        truth = _class_truth(p, rng)
        y_true = rng.choice(p.n_classes, p.n_samples, p=np.asarray(truth["class_weights"])).astype(np.int64)
        flip = rng.random(p.n_samples) < p.noise
        y_obs = np.where(flip, rng.integers(0, p.n_classes, p.n_samples), y_true)
        del flip
    elif p.kind == "linear":
        truth = _linear_truth(p, rng)
    else:
        truth = {"function": "friedman1", "informative": [0, 1, 2, 3, 4]}
    split_of = assign_splits(p.n_samples, p.split, rng, y_obs)

    bayes_acc = bayes_ll = 0.0
    for c, (x, y_reg) in enumerate(_synthetic_chunks(p, truth, y_true)):
        start = c * p.chunk_rows
        sl = slice(start, start + len(x))
        if p.kind == "classification":
            y = y_obs[sl]
            q = class_posterior(x, truth, p.noise)
            bayes_acc += q.max(1).sum()
            bayes_ll += -(q * np.log(q)).sum()
        else:
            y = y_reg
        _write_rows(writers, names, x, y, split_of[sl])

    truth["noise_std"] = p.noise if p.kind != "classification" else None
    if p.kind == "classification":
        truth["label_noise"] = p.noise
        truth["irreducible"] = {"accuracy": bayes_acc / p.n_samples,
                                "error_rate": 1 - bayes_acc / p.n_samples,
                                "log_loss": bayes_ll / p.n_samples}
    else:
        truth["irreducible"] = {"mse": p.noise**2}
    return {
        "task": "classification" if p.kind == "classification" else "regression",
        "classes": list(range(p.n_classes)) if p.kind == "classification" else None,
        "ground_truth": truth,
        "split_of": split_of,
        "labels": y_obs,
    }


# ----------------------------------------------------------------------------------- file


def file_sha256(path: Path) -> str:
    """The content hash of the user file, recorded in meta.json (which file version made the data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn_if_untracked(path: Path, raw_dir: Path = RAW_DIR) -> bool:
    """Warn (and return True) when the user file lies outside data/raw: DVC does not see it, so
    editing it would leave `dvc repro` reporting the data up to date."""
    if path.resolve().is_relative_to(raw_dir.resolve()):
        return False
    log.warning("data.path %s is outside %s/, which is not a DVC dependency: `dvc repro` will not "
                "re-run generate when the file changes. Move it into %s/ (see its README).", path, raw_dir, raw_dir)
    return True


def _read_user_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"data.path: cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def infer_task(target: pd.Series) -> str:
    """Classification for string/bool/categorical labels or few distinct integers; else regression."""
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna()
    integral = pd.api.types.is_integer_dtype(target) or bool(np.all(np.mod(values, 1) == 0))
    if integral and values.nunique() <= MAX_AUTO_CLASSES:
        return "classification"
    return "regression"


def _json_label(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _from_file(p: DataParams, writers_factory: Any) -> tuple[dict[str, Any], list[str]]:
    path = Path(p.path)
    df = _read_user_file(path)
    warn_if_untracked(path)
    if p.target not in df.columns:
        raise DataError(f"data.target: column {p.target!r} not in {p.path} (columns: {', '.join(map(str, df.columns))})")
    features = [c for c in df.columns if c != p.target]
    if not features:
        raise DataError(f"{p.path}: no feature columns besides the target {p.target!r}")
    bad = [str(c) for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"{p.path}: feature columns must be numeric; not numeric: {', '.join(bad)}")
    if len(df) < 3:
        raise DataError(f"{p.path}: {len(df)} rows; need at least 3 to split into train/val/test")
    target = df[p.target]
    task = infer_task(target) if p.task == "auto" else p.task
    classes = None
    if task == "classification":
        if target.isna().any():
            raise DataError(f"data.target: column {p.target!r} has {int(target.isna().sum())} missing labels")
        classes = sorted(target.unique().tolist(), key=lambda v: (str(type(v)), v))
        y = target.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
        classes = [_json_label(c) for c in classes]
    else:
        if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
            raise DataError(f"data.task: regression needs a numeric target; {p.target!r} is {target.dtype}")
        y = target.to_numpy(np.float32)
    rng = np.random.default_rng([p.seed, 1])
    split_of = assign_splits(len(df), p.split, rng, y if task == "classification" else None)
    names = [str(c) for c in features]
    writers = writers_factory(names, p.target, task)
    x = df[features].to_numpy(np.float32)
    _write_rows(writers, names, x, y, split_of, target=p.target)
    return {"task": task, "classes": classes, "ground_truth": None, "split_of": split_of,
            "labels": y if task == "classification" else None, "source_sha256": file_sha256(path)}, names


# ---------------------------------------------------------------------------------- output


def _schema(names: list[str], target: str, task: str) -> pa.Schema:
    y_type = pa.int64() if task == "classification" else pa.float32()
    return pa.schema([pa.field(n, pa.float32()) for n in names] + [pa.field(target, y_type)])


def _write_rows(writers: dict[str, pq.ParquetWriter], names: list[str], x: np.ndarray,
                y: np.ndarray, split_of: np.ndarray, target: str = "y") -> None:
    for sid, split in enumerate(SPLITS):
        mask = split_of == sid
        cols = {n: x[mask, j] for j, n in enumerate(names)}
        cols[target] = y[mask]
        writers[split].write_table(pa.table(cols, schema=writers[split].schema))


@contextlib.contextmanager
def _split_writers(out_dir: Path) -> Iterator[Any]:
    """Open one ParquetWriter per split on temporary paths; rename all into place only on success."""
    with contextlib.ExitStack() as stack:
        tmps = {s: stack.enter_context(atomic_path(out_dir / f"{s}.parquet")) for s in SPLITS}
        writers: dict[str, pq.ParquetWriter] = {}

        def factory(names: list[str], target: str, task: str) -> dict[str, pq.ParquetWriter]:
            schema = _schema(names, target, task)
            for s in SPLITS:
                writers[s] = pq.ParquetWriter(tmps[s], schema, compression="snappy")
            return writers

        try:
            yield factory
        finally:
            for w in writers.values():
                w.close()


def run(p: DataParams, out_dir: Path = DATA_DIR) -> dict[str, Any]:
    """Generate or ingest the data, write the three splits and meta.json; return the metadata."""
    out_dir = Path(out_dir)
    with _split_writers(out_dir) as factory:
        if p.source == "file":
            info, names = _from_file(p, factory)
            target = p.target
        else:
            names = [f"x{i}" for i in range(p.n_features)]
            target = "y"
            task = "classification" if p.kind == "classification" else "regression"
            info = _synthetic(p, factory(names, target, task), names)
    split_of = info.pop("split_of")
    labels = info.pop("labels")
    meta: dict[str, Any] = {
        "source": p.source,
        "kind": p.kind if p.source == "synthetic" else "file",
        "path": p.path if p.source == "file" else None,
        "seed": p.seed,
        "feature_names": names,
        "n_features": len(names),
        "target": target,
        "rows": {s: int((split_of == i).sum()) for i, s in enumerate(SPLITS)},
        **info,
    }
    if labels is not None:
        k = len(meta["classes"])
        meta["class_counts"] = {s: np.bincount(labels[split_of == i], minlength=k).tolist()
                                for i, s in enumerate(SPLITS)}
    write_json(out_dir / "meta.json", meta)
    log.info("wrote %s rows (%s) to %s", sum(meta["rows"].values()), meta["rows"], out_dir)
    return meta


def main() -> None:
    params = load_params()
    run(params.data)


if __name__ == "__main__":
    run_main(main, "generate")
