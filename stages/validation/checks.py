"""The checks GX has no expectation for: row hashes for cross-split leakage, and class balance
per split against train's shares."""


from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from stages.core.contracts import Meta

# GX reads this when it is imported; there is no network here and no analytics wanted anywhere
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


from stages.validation.expectations import is_numeric  # noqa: E402


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


def class_balance_failures(frames: dict[str, pd.DataFrame], meta: Meta, tol: float) -> list[dict[str, Any]]:
    """Each class's share of val and test within `tol` of its share of train.

    generate stratifies splits on the label, so shares agree up to rounding; one row's worth
    (1 / rows) is added to the tolerance so tiny splits do not fail on rounding alone.
    """
    target, k = meta.target, len(meta.classes)

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
