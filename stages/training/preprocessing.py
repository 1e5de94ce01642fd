"""The model's input layer for raw rows: from the encoded matrix (stages/data/encoding.py, one
float32 column per schema Column) to the network's inputs, with everything fitted on train held
as buffers and parameters, so the state_dict and the exported ONNX graph carry it.

Per kind (columns grouped by kind with index tensors: a fixed handful of tensor ops per kind,
however many columns):
- numeric: NaN -> the train median; a 0/1 missing indicator for each column that had missing
  values in train (Column.missing_rate > 0);
- datetime (days since 1970, NaN): NaN -> the train median day (+ indicator alike), then elapsed
  days, the season (sin/cos of the year's fraction), the hour (sin/cos of the day's fraction, UTC)
  and the weekday as a 7-way one-hot (a weekly effect is rarely a sinusoid: weekends differ);
- boolean, categorical: the index (UNKNOWN, MISSING, 2 + vocabulary place) as a one-hot over
  every slot when the vocabulary has at most `max_one_hot` categories, else a row of a learned
  embedding table; an index that is not one of the column's slots (NaN, fractional, out of
  range) is UNKNOWN.

In two steps, so training can do the first once per split instead of once per batch (nothing in
it is trained: the same float ops give the same values either way):
- `prepare`: the parameter-free part, per row: the continuous block (numbers and date parts,
  which FitlineModel standardises) and the codes (indicators, weekdays, clean category indices,
  the embedded ones already as rows of the embedding table);
- `expand`: the prepared row (standardised) -> one-hots and embeddings beside the dense values.
On a training batch much of a step's cost is per tensor op, whatever its size: hence the hoisting,
and the codes laid out so that expand slices them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from stages.core.contracts import Column
from stages.data.encoding import MISSING, UNKNOWN

DAYS_PER_YEAR = 365.2425  # the Gregorian year: the season's phase does not drift over decades
WEEKDAY_OFFSET = 3  # 1970-01-01 was a Thursday: (floor(days) + 3) mod 7 is Monday = 0 (pandas' dayofweek)
DATE_PARTS = ("days", "season_sin", "season_cos", "hour_sin", "hour_cos")  # per date column, standardised
CATEGORY_KINDS = ("boolean", "categorical")
KINDS = ("numeric", "datetime", *CATEGORY_KINDS)
assert (UNKNOWN, MISSING) == (0, 1)  # a column's slots are 0 .. vocabulary + 1, UNKNOWN first


def embedding_dim(n_categories: int) -> int:
    """The embedding width: the fourth root of the largest embedded vocabulary, rounded up, at
    most 16 (TensorFlow's rule of thumb: 33 categories -> 3, 256 -> 4, 10 000 -> 10).

    Narrow on purpose: training cost grows with the network's input width (sqrt(K) widths halved
    the samples/s of a table with ten categorical columns), and an additive category effect needs
    a single dimension. One width for every embedded column, so they share one table and one
    lookup (a table per width costs a lookup and a backward pass each)."""
    return min(16, max(1, math.ceil(n_categories**0.25 - 1e-9)))


def _layout(columns: list[Column], max_one_hot: int) -> dict[str, list[int]]:
    """Column positions per role, in the schema's order."""
    kinds = [c.kind for c in columns]
    cats = [j for j, k in enumerate(kinds) if k in CATEGORY_KINDS]
    return {
        "numeric": [j for j, k in enumerate(kinds) if k == "numeric"],
        "dates": [j for j, k in enumerate(kinds) if k == "datetime"],
        "flags": [j for j, c in enumerate(columns) if c.kind in ("numeric", "datetime") and c.missing_rate > 0],
        "one_hot": [j for j in cats if len(columns[j].vocabulary or []) <= max_one_hot],
        "embedded": [j for j in cats if len(columns[j].vocabulary or []) > max_one_hot],
    }


def layer_sizes(columns: list[Column], max_one_hot: int) -> tuple[int, int, int]:
    """(a prepared row's width, the network's input width, the embedding table's parameter count)
    of a schema, without building it (the train stage's memory estimate)."""
    at = _layout(columns, max_one_hot)
    sizes = {j: len(columns[j].vocabulary or []) + 2 for j in at["one_hot"] + at["embedded"]}
    dim = embedding_dim(max((sizes[j] - 2 for j in at["embedded"]), default=0))
    dense = len(at["numeric"]) + len(DATE_PARTS) * len(at["dates"]) + len(at["flags"])
    prepared = dense + len(at["dates"]) + len(sizes)
    width = dense + 7 * len(at["dates"]) + sum(sizes[j] for j in at["one_hot"]) + dim * len(at["embedded"])
    return prepared, width, dim * sum(sizes[j] for j in at["embedded"]) if at["embedded"] else 0


def _index(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


class RawRowEncoder(nn.Module):
    """Encoded matrix [N, n_columns] -> prepared rows [N, n_scaled + n_codes] -> network inputs."""

    def __init__(self, columns: list[Column], max_one_hot: int) -> None:
        super().__init__()
        bad = [f"{c.name}: {c.kind}" for c in columns if c.kind not in KINDS]
        if bad:
            raise ValueError(f"model: unknown column kind(s) {', '.join(bad)} (allowed: {', '.join(KINDS)})")
        at = _layout(columns, max_one_hot)
        cats = at["one_hot"] + at["embedded"]  # prepared in this order: the embedded codes last
        self.n_num, self.n_dates, self.n_flags = len(at["numeric"]), len(at["dates"]), len(at["flags"])
        self.n_cats = len(cats)
        self.n_embedded = len(at["embedded"])
        self.n_scaled = self.n_num + len(DATE_PARTS) * self.n_dates
        self.n_dense = self.n_scaled + self.n_flags  # prepared columns that go to the network as they are
        # structure, derived from the config (rebuilt by build_model, not saved in the state_dict)
        for name, cols in (("num_cols", at["numeric"]), ("date_cols", at["dates"]), ("flag_cols", at["flags"]),
                           ("cat_cols", cats)):
            self.register_buffer(name, _index(cols), persistent=False)
        sizes = [len(columns[j].vocabulary or []) + 2 for j in cats]  # + UNKNOWN and MISSING
        self.register_buffer("cat_max", torch.tensor(sizes, dtype=torch.float32) - 1, persistent=False)
        # an embedded column's codes are rows of the one table: its index plus the column's offset
        table = sizes[len(at["one_hot"]):]
        offsets = [0] * len(at["one_hot"]) + [sum(table[:i]) for i in range(len(table))]
        self.register_buffer("cat_offset", torch.tensor(offsets, dtype=torch.float32), persistent=False)
        # fitted on train (fit): the values missing numbers and dates become
        self.register_buffer("num_fill", torch.zeros(self.n_num))
        self.register_buffer("date_fill", torch.zeros(self.n_dates))
        self._expansion(at, sizes)

    def _expansion(self, at: dict[str, list[int]], sizes: list[int]) -> None:
        """What expand makes of the codes: one-hot slot s is "prepared column slot_position[s]
        holds slot_value[s]" (weekdays, then the one-hot categories); the embedded codes, the last
        n_embedded prepared columns, are rows of one table."""
        weekday_at, n_one_hot = self.n_dense, len(at["one_hot"])
        coded = ([(weekday_at + i, 7) for i in range(self.n_dates)]
                 + [(weekday_at + self.n_dates + i, sizes[i]) for i in range(n_one_hot)])
        self.register_buffer("slot_position", _index([p for p, k in coded for _ in range(k)]), persistent=False)
        self.register_buffer("slot_value", torch.tensor([float(v) for _, k in coded for v in range(k)]),
                             persistent=False)
        self.n_slots = len(self.slot_value)
        dim = embedding_dim(max((k - 2 for k in sizes[n_one_hot:]), default=0))
        self.embedding = nn.Embedding(sum(sizes[n_one_hot:]), dim) if self.n_embedded else None
        self.n_outputs = self.n_dense + self.n_slots + dim * self.n_embedded

    # ------------------------------------------------------------------------------ forward

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(continuous block to standardise [N, n_scaled], codes [N, n_flags + n_dates + n_cats]);
        None for an empty block."""
        continuous, codes = [], []
        if self.n_num:
            v = x.index_select(1, self.num_cols)
            continuous.append(torch.where(torch.isnan(v), self.num_fill, v))
        if self.n_flags:
            codes.append(torch.isnan(x.index_select(1, self.flag_cols)).to(x.dtype))
        if self.n_dates:
            d = x.index_select(1, self.date_cols)
            d = torch.where(torch.isnan(d), self.date_fill, d)
            whole = torch.floor(d)
            year, day = d * (2 * math.pi / DAYS_PER_YEAR), (d - whole) * (2 * math.pi)
            continuous.append(torch.stack([d, torch.sin(year), torch.cos(year), torch.sin(day), torch.cos(day)], 2)
                              .flatten(1))
            k = whole + WEEKDAY_OFFSET
            codes.append(k - torch.floor(k / 7) * 7)  # k mod 7 in plain ops (ONNX's Mod wants fmod for floats)
        if self.n_cats:
            c = x.index_select(1, self.cat_cols)
            # a slot is an integer in 0..max: anything else (NaN fails every comparison) is UNKNOWN
            slot = torch.floor(torch.minimum(torch.clamp(c, min=0.0), self.cat_max))
            codes.append(torch.where(slot == c, c, torch.full_like(c, float(UNKNOWN))) + self.cat_offset)
        return _joined(continuous), _joined(codes)

    def expand(self, p: torch.Tensor) -> torch.Tensor:
        """Prepared rows (continuous block standardised) -> the network's input [N, n_outputs]."""
        parts = [p[:, : self.n_dense]] if self.n_dense else []
        if self.n_slots:
            parts.append((p.index_select(1, self.slot_position) == self.slot_value).to(p.dtype))
        if self.embedding is not None:
            # index_select, not F.embedding: the same rows, and its backward is half the cost on CPU
            rows = p[:, -self.n_embedded :].long().flatten()
            width = self.embedding.embedding_dim * self.n_embedded
            parts.append(self.embedding.weight.index_select(0, rows).reshape(-1, width))
        return _joined(parts)

    # ---------------------------------------------------------------------------------- fit

    @torch.no_grad()
    def fit(self, x: np.ndarray) -> None:
        """The train split's medians (NaN ignored; 0 for a column with no value at all)."""
        for fill, cols in ((self.num_fill, self.num_cols), (self.date_fill, self.date_cols)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nanmedian of an all-NaN column
                medians = [np.nanmedian(x[:, j]) if len(x) else np.nan for j in cols.tolist()]
            fill.copy_(torch.tensor(np.nan_to_num(np.array(medians, dtype=np.float64), nan=0.0)))

    def continuous_numpy(self, x: np.ndarray) -> np.ndarray:
        """The continuous block of a numpy chunk (for the train split's moments), float32 as in forward."""
        with torch.no_grad():
            return self.prepare(torch.from_numpy(np.array(x, dtype=np.float32, copy=True)))[0].numpy()


def _joined(parts: list[torch.Tensor]) -> torch.Tensor | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def check_encoded(x: np.ndarray, columns: list[Column], *, train: bool) -> str | None:
    """What is wrong with an encoded matrix for this schema, or None: no infinite value; NaN only
    in numeric and datetime columns (in train only where the schema says train had missing values,
    else the model would lack their indicators); category indices integral in 0..vocabulary + 1."""
    inf = np.isinf(x)
    if inf.any():
        return f"{int(inf.sum())} infinite feature values (column {columns[int(np.argmax(inf.any(0)))].name!r})"
    nan = np.isnan(x).any(axis=0)
    for j, c in enumerate(columns):
        if c.kind in CATEGORY_KINDS:
            v, k = x[:, j], len(c.vocabulary or []) + 2
            if nan[j] or (v < 0).any() or (v >= k).any() or (v != np.round(v)).any():
                return (f"column {c.name!r} ({c.kind}) holds values that are not category indices 0..{k - 1} "
                        "(re-run the generate stage)")
        elif nan[j] and train and c.missing_rate == 0:
            return (f"column {c.name!r} has missing values in train, but its missing_rate in data/meta.json "
                    "is 0 (re-run the generate stage)")
    return None
