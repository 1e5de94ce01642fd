"""Drift of a new batch against the train split, per column and for the model's predictions.

Numeric columns (and predictions): the two-sample Kolmogorov-Smirnov test and the population
stability index (PSI) over the reference's deciles. Categorical columns: PSI over the
reference's category shares, with categories the reference never had as one more bin. A column
drifts when the shift is both significant (p below `p_value`: not sampling noise) and large
(PSI above `psi`: a small but certain shift in a big batch is not worth an alarm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-4  # share floor in the PSI: an empty bin would make it infinite


@dataclass(frozen=True)
class Shift:
    column: str
    test: str  # ks+psi | psi
    statistic: float  # KS D, or the chi-square statistic for categories
    p_value: float
    psi: float
    drifted: bool
    detail: str

    def line(self) -> str:
        return f"{self.column}: {self.detail}"


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and its asymptotic p-value (Stephens' correction)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))
    ne = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.2:  # the series below converges slowly there; p is 1 to many digits
        return d, 1.0
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, float(min(max(p, 0.0), 1.0))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    e, a = np.maximum(expected, EPS), np.maximum(actual, EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_shift(name: str, reference: np.ndarray, batch: np.ndarray, p_value: float, psi_limit: float) -> Shift:
    ref, new = reference[np.isfinite(reference)], batch[np.isfinite(batch)]
    if len(ref) == 0 or len(new) == 0:
        return Shift(name, "ks+psi", 0.0, 1.0, 0.0, False, "no values to compare")
    d, p = ks_2samp(ref, new)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
    shares = [np.bincount(np.searchsorted(edges, x, "right"), minlength=len(edges) + 1) / len(x) for x in (ref, new)]
    value = psi(*shares)
    drifted = p < p_value and value > psi_limit
    detail = (f"mean {np.mean(new):.4g} vs train {np.mean(ref):.4g}, KS D {d:.3f} (p {p:.2g}), PSI {value:.3f}"
              + (f": drifted (p < {p_value:g} and PSI > {psi_limit:g})" if drifted else ""))
    return Shift(name, "ks+psi", d, p, value, drifted, detail)


def categorical_shift(name: str, reference: np.ndarray, batch: np.ndarray, p_value: float,
                      psi_limit: float) -> Shift:
    """Shares of the reference's categories (plus 'other') in the batch: PSI and a chi-square test."""
    cats, counts = np.unique(reference.astype(str), return_counts=True)
    index = {c: i for i, c in enumerate(cats)}
    new = np.bincount([index.get(str(v), len(cats)) for v in batch], minlength=len(cats) + 1)
    expected = np.append(counts / counts.sum(), 0.0)
    actual = new / max(new.sum(), 1)
    value = psi(expected, actual)
    chi2, dof = _chi2(np.maximum(expected, EPS) * new.sum(), new), max(len(cats), 1)
    p = _chi2_sf(chi2, dof)
    drifted = p < p_value and value > psi_limit
    unseen = actual[-1]
    detail = (f"{len(cats)} train categories, {unseen:.1%} of the batch in none of them, PSI {value:.3f} (p {p:.2g})"
              + (f": drifted (p < {p_value:g} and PSI > {psi_limit:g})" if drifted else ""))
    return Shift(name, "psi", chi2, p, value, drifted, detail)


def _chi2(expected: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sum((observed - expected) ** 2 / expected))


def _chi2_sf(x: float, dof: int) -> float:
    """P(chi2_dof > x) by the Wilson-Hilferty normal approximation (good to a few % for dof >= 1)."""
    if x <= 0:
        return 1.0
    z = ((x / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))
