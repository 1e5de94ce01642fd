"""Real tables end to end: a messy CSV through generate, the schema in meta.json, the raw splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages import generate
from stages.core import contracts
from stages.core.errors import DataError
from stages.core.params import DataParams
from stages.data.encoding import encode_frame
from stages.data.splits import load_splits, read_split, read_split_features, read_split_frame
from tests.data.conftest import MESSY_DUPLICATES, MESSY_ROWS, MESSY_TARGET_GAPS

FEATURES = ["Age", "income ($)", "plan", "active", "signup date", "город", "rooms", "prediction"]


def _run(path, tmp_path, **kw):
    return generate.run(DataParams(source="file", path=str(path), target="price", **kw), tmp_path / "out")


def test_messy_csv_schema_in_meta_json(messy_csv, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        meta = _run(messy_csv, tmp_path)
    assert meta.task == "regression" and meta.feature_names == FEATURES  # file order, id and empty column out
    assert {c.name: c.kind for c in meta.columns} == {
        "Age": "numeric", "income ($)": "numeric", "plan": "categorical", "active": "boolean",
        "signup date": "datetime", "город": "categorical", "rooms": "numeric", "prediction": "numeric"}
    assert meta.dropped == {
        "customer id": "id-like: 235 distinct values in 241 rows (to keep it, declare it in data.columns)",
        "notes": "no values"}
    assert meta.target_missing == MESSY_TARGET_GAPS
    assert sum(meta.rows.values()) == MESSY_ROWS + MESSY_DUPLICATES - MESSY_TARGET_GAPS  # duplicates kept
    # one log line for the rows without a target, one for the left-out columns
    assert [r.message for r in caplog.records if "without a value" in r.message] == [
        f"data.target: dropped {MESSY_TARGET_GAPS} of 246 row(s) without a value in 'price'"]
    assert "left out column(s) 'customer id' (id-like" in caplog.text
    on_disk = json.loads((tmp_path / "out/meta.json").read_text())
    assert on_disk == meta.to_dict() and contracts.load_meta(tmp_path / "out") == meta


def test_schema_statistics_come_from_the_train_split(messy_csv, tmp_path):
    meta = _run(messy_csv, tmp_path)
    train = read_split_frame("train", tmp_path / "out")
    schema = {c.name: c for c in meta.columns}
    for name in FEATURES:
        keys_missing = train[name].isna() | train[name].astype(str).eq("")
        assert schema[name].missing_rate == pytest.approx(keys_missing.mean(), abs=1e-6), name
    # most frequent first; "legacy" (3 rows in the whole file) pooled out
    counts = train["plan"].value_counts()
    assert schema["plan"].vocabulary == counts.index.tolist()[:3] and "legacy" not in schema["plan"].vocabulary
    assert schema["active"].vocabulary == ["False", "True"]
    assert schema["Age"].vocabulary is None


def test_splits_hold_the_raw_columns(messy_csv, tmp_path):
    meta = _run(messy_csv, tmp_path)
    frames = {s: read_split_frame(s, tmp_path / "out") for s in contracts.SPLITS}
    train = frames["train"]
    assert list(train.columns) == [*FEATURES, "price"]
    assert {n: str(t) for n, t in train.dtypes.items()} == {
        "Age": "float64", "income ($)": "float64", "plan": "str", "active": "boolean",
        "signup date": "datetime64[us, UTC]", "город": "str", "rooms": "int64", "prediction": "float64",
        "price": "float32"}
    everything = pd.concat(frames.values())
    assert everything["income ($)"].max() == pytest.approx(1.2e8)  # outliers are the data's own
    assert everything["plan"].eq("legacy").sum() == 3 and everything["Age"].isna().any()
    # the model's input is encode_frame of those raw columns, whichever reader a stage uses
    for s in contracts.SPLITS:
        split = read_split(s, meta, tmp_path / "out")
        raw = read_split_features(s, meta, tmp_path / "out")
        np.testing.assert_array_equal(split.x, encode_frame(raw, meta.columns))
        assert split.x.dtype == np.float32 and split.x.shape == (meta.rows[s], len(FEATURES))
        np.testing.assert_array_equal(split.y, frames[s]["price"].to_numpy(np.float32))
    assert list(load_splits(tmp_path / "out")) == list(contracts.SPLITS)


def test_overrides_change_the_schema(messy_csv, tmp_path):
    meta = _run(messy_csv, tmp_path, columns={"rooms": "categorical", "customer id": "categorical",
                                              "prediction": "drop"})
    schema = {c.name: c for c in meta.columns}
    assert schema["rooms"].kind == "categorical" and sorted(schema["rooms"].vocabulary) == ["1", "2", "3", "4", "5"]
    assert schema["customer id"].kind == "categorical"  # declared: kept although it looks like an id
    assert meta.dropped == {"prediction": "declared drop in data.columns", "notes": "no values"}
    assert read_split_frame("train", tmp_path / "out")["rooms"].dtype == np.int64  # stored as the file has it


def test_an_unknown_override_names_the_column(messy_csv, tmp_path):
    with pytest.raises(DataError, match=r"^data.columns: 'Rooms' not in .*houses.csv \(columns: customer id, Age"):
        _run(messy_csv, tmp_path, columns={"Rooms": "numeric"})
    with pytest.raises(DataError, match=r"^data.columns: 'plan' is declared numeric, but .* are not numbers, "
                                        r"e.g. 'basic' \(declare it categorical or fix the file\)$"):
        _run(messy_csv, tmp_path, columns={"plan": "numeric"})


def test_parquet_types_are_kept(tmp_path):
    n = 60
    rng = np.random.default_rng(1)
    df = pd.DataFrame({
        "flag": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean"),
        "when": pd.Series(pd.date_range("2021-01-01", periods=n, freq="D")).astype("datetime64[ns]"),
        "kind": pd.Categorical(rng.choice(["a", "b"], n)),
        "label": rng.choice(["no", "yes"], n),
    })
    df.to_parquet(tmp_path / "t.parquet")
    meta = generate.run(DataParams(source="file", path=str(tmp_path / "t.parquet"), target="label"), tmp_path / "out")
    assert [(c.name, c.kind) for c in meta.columns] == [("flag", "boolean"), ("when", "datetime"),
                                                        ("kind", "categorical")]
    assert meta.classes == ["no", "yes"] and meta.dropped == {} and meta.target_missing == 0
    train = read_split_frame("train", tmp_path / "out")
    assert str(train["when"].dtype) == "datetime64[us, UTC]" and str(train["flag"].dtype) == "boolean"
    days = read_split("train", meta, tmp_path / "out").x[:, 1]
    assert days.min() >= 18628 and days.max() <= 18628 + n  # 2021-01-01 is day 18628


def test_integer_labels_with_gaps_stay_integer_classes(tmp_path):
    df = pd.DataFrame({"a": np.arange(40.0), "y": [0, 1] * 20})
    df["y"] = df["y"].astype(float)
    df.loc[[0, 5], "y"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    meta = generate.run(DataParams(source="file", path=str(tmp_path / "t.csv"), target="y"), tmp_path / "out")
    assert meta.task == "classification" and meta.classes == [0, 1] and meta.target_missing == 2
    assert isinstance(meta.classes[0], int)


def test_too_few_rows_with_a_target(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,\n2,\n3,4\n4,5\n")
    with pytest.raises(DataError, match=r"t.csv: 2 rows with a target; need at least 3"):
        generate.run(DataParams(source="file", path=str(tmp_path / "t.csv"), target="y"), tmp_path / "out")
