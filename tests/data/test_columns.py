"""Column typing decisions on small frames: kinds, ids, overrides, stored forms, the train schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.core.errors import DataError, ParamsError
from stages.core.params import parse_params
from stages.data import columns
from stages.data.encoding import MISSING, UNKNOWN, datetime_days, encode_frame

DATES = ["2021-01-02", "03/04/2021", "March 5, 2022", "2020-02-29T10:30:00Z"]


@pytest.mark.parametrize(("values", "kind"), [
    (pd.Series([1.0, 2.5, None]), "numeric"),
    (pd.Series([1, 2, 3]), "numeric"),
    (pd.Series([True, False]), "boolean"),
    (pd.Series([True, None, False], dtype=object), "boolean"),  # a CSV's True/False column with gaps
    (pd.Series([True, None], dtype="boolean"), "boolean"),
    (pd.Series(["a", "b", "a", None, ""]), "categorical"),
    (pd.Series(pd.Categorical(["x", "y"])), "categorical"),
    (pd.Series([*DATES, None, ""]), "datetime"),
    (pd.Series(pd.to_datetime(["2021-01-02", None])), "datetime"),
    # dateutil reads these as dates filled in from today; they are text
    (pd.Series(["10:30", "11:00", "12:15"] * 3), "categorical"),
    (pd.Series(["March", "May", "June"] * 3), "categorical"),
    (pd.Series(["1st", "2nd", "3rd"] * 3), "categorical"),
    (pd.Series([f"u{i % 19}" for i in range(19)]), "categorical"),  # 19 distinct: too few values to call an id
    (pd.Series([f"u{i % 18}" for i in range(20)]), "categorical"),  # 18 of 20 distinct: 90%
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_infer_kind(values, kind):
    assert columns.infer_kind(values) == (kind, "")


def test_nearly_all_dates_is_a_date_column_and_fewer_is_not():
    dates = pd.Series([f"2021-01-{d:02d}" for d in range(1, 20)])
    assert columns.infer_kind(pd.concat([dates, pd.Series(["soon"])]))[0] == "datetime"  # 19 of 20 parse
    assert columns.infer_kind(pd.concat([dates.iloc[:18], pd.Series(["soon", "later"])] * 2))[0] == "categorical"


KEEP = " (to keep it, declare it in data.columns)"


@pytest.mark.parametrize(("values", "reason"), [
    (pd.Series([f"u{i}" for i in range(20)]), "id-like: 20 distinct values in 20 rows" + KEEP),
    (pd.Series([f"u{i % 19}" for i in range(20)]), "id-like: 19 distinct values in 20 rows" + KEEP),
    (pd.Series([None, None]), "no values"),
    (pd.Series([np.nan, np.nan]), "no values"),
    (pd.Series(["", None]), "no values"),
])
def test_left_out_columns_say_why(values, reason):
    assert columns.infer_kind(values) == (None, reason)


def test_overrides_win_and_are_checked():
    df = pd.DataFrame({"rooms": [1, 2, 3], "code": ["1", "2.5", ""], "when": ["2021-01-01", "x", None],
                       "note": ["a", "b", "c"]})
    kinds, dropped = columns.type_columns(df, {"rooms": "categorical", "code": "numeric", "when": "datetime",
                                               "note": "drop"}, "t.csv")
    assert kinds == {"rooms": "categorical", "code": "numeric", "when": "datetime"}
    assert dropped == {"note": "declared drop in data.columns"}
    assert columns.stored_values(df["code"], "numeric", "code").tolist()[:2] == [1.0, 2.5]
    assert np.isnan(columns.stored_values(df["code"], "numeric", "code").iloc[2])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nope": "numeric"}, r"^data.columns: 'nope' not in t.csv \(columns: a, b, d\)$"),
    ({"b": "numeric"}, r"^data.columns: 'b' is declared numeric, but 1 value\(s\) in t.csv are not numbers, "
                       r"e.g. 'abc' \(declare it categorical or fix the file\)$"),
    ({"a": "datetime"}, r"^data.columns: 'a' is declared datetime, but holds int64 values in t.csv"),
    ({"b": "datetime"}, r"^data.columns: 'b' is declared datetime, but none of its values in t.csv is a date, "
                        r"e.g. '1'$"),
])
def test_bad_overrides_name_the_column(overrides, message):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["1", "abc", None], "d": ["x", "y", "z"]})
    with pytest.raises(DataError, match=message):
        columns.type_columns(df, overrides, "t.csv")


@pytest.mark.parametrize(("raw", "message"), [
    ({"data": {"columns": {"a": "text"}}}, r"data.columns.a: 'text' is not allowed: .*'numeric', 'categorical', "
                                           r"'datetime' or 'drop'"),
    ({"data": {"columns": {"a": "numeric"}}}, r"data.columns: \['a'\] given, but only a user file"),
    ({"data": {"source": "file", "path": "t.csv", "target": "y", "columns": {"y": "numeric"}}},
     r"data.columns: 'y' is the target \(data.target\)"),
    ({"data": {"missing_rate": 1.0}}, r"data.missing_rate: 1.0 is not allowed"),
    ({"data": {"min_category_count": 0}}, r"data.min_category_count: 0 is not allowed"),
])
def test_params_refuse_bad_column_options(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_stored_forms():
    """Splits hold the user's values; dates parsed (UTC, us), gaps as the dtype's own missing value."""
    dates = columns.stored_values(pd.Series([*DATES, None, "soon"]), "datetime", "d")
    assert str(dates.dtype) == "datetime64[us, UTC]" and dates.isna().tolist() == [False] * 4 + [True, True]
    # the same days whether the model reads the stored timestamps or the user's strings
    np.testing.assert_array_equal(datetime_days(dates), datetime_days(pd.Series([*DATES, None, "soon"])))
    assert str(columns.stored_values(pd.Series([True, None], dtype=object), "boolean", "b").dtype) == "boolean"
    assert columns.stored_values(pd.Series([True, None], dtype=object), "numeric", "b").tolist()[0] == 1.0
    ints = pd.Series([3, 1, 2])
    assert columns.stored_values(ints, "categorical", "c") is ints


def test_datetime_days_counts_days_whatever_the_unit():
    """pandas 3 parses text to microseconds: dividing its int64 ticks by ns per day gave 1000x too few days."""
    text = ["1970-01-02", "2020-01-01T12:00"]
    for values in (pd.Series(text),
                   pd.Series(pd.to_datetime(text, format="ISO8601")).astype("datetime64[ns]"),
                   pd.Series(pd.to_datetime(text, utc=True, format="ISO8601")).astype("datetime64[s, UTC]")):
        np.testing.assert_allclose(datetime_days(values), [1.0, 18262.5])


@pytest.mark.parametrize(("counts", "vocab"), [
    ({"a": 10, "b": 6, "c": 4}, ["a", "b"]),  # c pooled
    ({"b": 5, "a": 5, "c": 9}, ["c", "a", "b"]),  # ties in key order: reproducible
    ({"a": 10, "c": 4, "d": 1}, ["a", "c", "d"]),  # pooling would leave one: kept as is
    ({"a": 2, "b": 1}, ["a", "b"]),
])
def test_vocabulary_pools_rare_categories(counts, vocab):
    assert columns.vocabulary(counts, 5) == vocab


def test_train_stats_schema_and_pooled_categories_encode_as_unknown():
    frame = pd.DataFrame({"c": ["a"] * 6 + ["b"] * 5 + ["rare", "", None, None],
                          "n": [1.0] * 12 + [np.nan] * 3,
                          "f": pd.array([True] * 10 + [None] * 5, dtype="boolean")})
    stats = columns.TrainStats({"c": "categorical", "n": "numeric", "f": "boolean"})
    stats.add(frame.iloc[:8])
    stats.add(frame.iloc[8:])  # chunk by chunk, as the mixed generator adds them
    schema = stats.columns(min_count=5)
    assert [(c.name, c.kind, c.missing_rate, c.vocabulary) for c in schema] == [
        ("c", "categorical", 0.2, ["a", "b"]), ("n", "numeric", 0.2, None),
        ("f", "boolean", 0.333333, ["False", "True"])]
    x = encode_frame(frame, schema)
    assert x[11, 0] == UNKNOWN and x[12, 0] == x[13, 0] == MISSING and x[0, 0] == 2 and x[6, 0] == 3


@pytest.mark.parametrize("values", [
    pd.Series(["a", "bb", "", None, "a"]),
    pd.Series(pd.array(["a", "bb", None], dtype="string")),
    pd.Series([True, False, None] * 3),
    pd.Series(pd.array([True, False, None], dtype="boolean")),
    pd.Series(np.array([True, False])),
    pd.Series(np.array([3, 0, -7])),
    pd.Series([1.0, 2.5, np.nan, np.inf, -3.0, 1e20, -0.0]),
    pd.Series(np.array([0.1, 2.0, np.nan], dtype=np.float32)),
    pd.Series(pd.array([1, None, 3], dtype="Int64")),
    pd.Series([1, "a", 2.0, None, True], dtype=object),
])
def test_vectorised_category_keys_equal_the_value_by_value_rule(values):
    from stages.data.encoding import _key, category_keys

    assert list(category_keys(values)) == [_key(v) for v in values.tolist()]
