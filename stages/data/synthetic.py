"""Synthetic data with known ground truth: linear, Friedman #1 and Gaussian-cluster
classification.

Rows are generated in chunks of `data.chunk_rows`, each chunk from its own seeded stream, so
memory stays bounded however many rows are asked for and the same params give the same bytes.
The ground truth (coefficients, class means, noise) and the irreducible error it implies go into
meta.json, where evaluate judges underfitting against it.
"""


from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from stages.core.params import DataParams
from stages.core.resources import check_fits
from stages.data.splits import assign_splits, write_rows


def linear_truth(p: DataParams, rng: np.random.Generator) -> dict[str, Any]:
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


def check_memory(p: DataParams) -> None:
    """Refuse params whose chunks cannot fit: a chunk is float32 features, their float64 copy for
    the target and the Arrow table written (16 bytes a value); labels and split ids stay whole."""
    rows = min(p.chunk_rows, p.n_samples)
    check_fits("generate", {"one chunk of rows": 16 * rows * p.n_features, "labels and split ids": 17 * p.n_samples},
               f"lower data.chunk_rows (now {p.chunk_rows}) or data.n_features (now {p.n_features})")


def synthetic_data(p: DataParams, writers: dict[str, pq.ParquetWriter], names: list[str]) -> dict[str, Any]:
    check_memory(p)
    rng = np.random.default_rng([p.seed, 1])
    y_true = y_obs = None
    if p.kind == "classification":
        truth = _class_truth(p, rng)
        y_true = rng.choice(p.n_classes, p.n_samples, p=np.asarray(truth["class_weights"])).astype(np.int64)
        flip = rng.random(p.n_samples) < p.noise
        y_obs = np.where(flip, rng.integers(0, p.n_classes, p.n_samples), y_true)
        del flip
    elif p.kind == "linear":
        truth = linear_truth(p, rng)
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
        write_rows(writers, names, x, y, split_of[sl])

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
