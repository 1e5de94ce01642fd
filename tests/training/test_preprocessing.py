"""The model's raw-row input layer (stages/training/preprocessing.py): imputation and missing
indicators, dates, one-hot vs embedding and their UNKNOWN/MISSING slots, the checks on encoded
splits, the model file with a schema, its ONNX export, and a mixed table trained end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stages.core.contracts import Column, Meta
from stages.core.errors import DataError
from stages.core.params import TrainParams
from stages.data.encoding import MISSING, UNKNOWN, encode_frame
from stages.data.splits import Split
from stages.training.loop import check_splits, model_config, train_model
from stages.training.models import build_model, fit_scaling, load_model, network_size, save_model
from stages.training.preprocessing import RawRowEncoder, embedding_dim, layer_sizes
from tests.conftest import model_config as make_config

VOCAB3 = ["blue", "green", "red"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def schema_config(columns: list[Column], **kw):
    return make_config(columns=columns, feature_names=[c.name for c in columns], n_features=len(columns), **kw)


def fitted(columns: list[Column], x: np.ndarray, y: np.ndarray | None = None, **kw):
    m = build_model(schema_config(columns, **kw), generator=torch.Generator().manual_seed(0))
    fit_scaling(m, x, np.arange(len(x), dtype=np.float32) if y is None else y, "standard")
    return m.eval()


def network_input(model, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.encoder.expand(model.prepare(torch.as_tensor(x, dtype=torch.float32)))


# ------------------------------------------------------------------ numeric: impute + indicator


def test_numeric_missing_values_get_the_train_median_and_an_indicator_where_train_had_gaps() -> None:
    cols = [Column("a", missing_rate=0.25), Column("b")]
    x = np.array([[1.0, 10.0], [np.nan, 20.0], [5.0, 30.0], [3.0, 40.0]], dtype=np.float32)
    m = fitted(cols, x)
    assert m.encoder.num_fill.tolist() == [3.0, 25.0]  # nanmedian of a: of 1, 5, 3
    # standardised after imputation: a's column is 1, 3, 5, 3
    np.testing.assert_allclose(m.x_mean.numpy(), [3.0, 25.0], rtol=1e-6)
    np.testing.assert_allclose(m.x_std.numpy(), [np.std([1, 3, 5, 3]), np.std([10, 20, 30, 40])], rtol=1e-6)
    h = network_input(m, np.array([[np.nan, np.nan], [5.0, 20.0]], dtype=np.float32))
    assert h.shape == (2, 3)  # a, b, a's indicator: b had no gaps in train, so no indicator
    assert h[0, 0] == 0 and h[0, 1] == 0  # both imputed to the mean's position (median == mean here)
    assert h[:, 2].tolist() == [1.0, 0.0]
    assert torch.isfinite(m(torch.tensor([[np.nan, np.nan]]))).all()


def test_an_all_missing_column_imputes_zero() -> None:
    m = fitted([Column("a", missing_rate=1.0), Column("b")], np.array([[np.nan, 1.0], [np.nan, 2.0]], np.float32))
    assert m.encoder.num_fill.tolist() == [0.0, 1.5]


# --------------------------------------------------------------------------------- categories


def test_one_hot_up_to_the_limit_then_an_embedding() -> None:
    cols = [Column("small", "categorical", vocabulary=[f"v{i}" for i in range(32)]),
            Column("large", "categorical", vocabulary=[f"v{i}" for i in range(33)]),
            Column("flag", "boolean", vocabulary=["False", "True"])]
    enc = RawRowEncoder(cols, max_one_hot=32)
    assert enc.n_slots == 34 + 4 and enc.n_embedded == 1  # small and flag one-hot with 2 extra slots each
    assert tuple(enc.embedding.weight.shape) == (35, embedding_dim(33)) == (35, 3)
    assert enc.n_outputs == 38 + 3
    every = RawRowEncoder(cols, max_one_hot=0)
    assert every.n_slots == 0 and every.n_embedded == 3 and every.embedding.weight.shape[0] == 34 + 35 + 4


def test_embedding_width_grows_as_the_fourth_root_up_to_16() -> None:
    sizes = (2, 16, 17, 33, 81, 82, 256, 10_000, 65_536, 10**6)
    assert [embedding_dim(k) for k in sizes] == [2, 2, 3, 3, 3, 4, 4, 10, 16, 16]


def test_unknown_missing_and_invalid_indices() -> None:
    cols = [Column("color", "categorical", vocabulary=VOCAB3)]
    m = fitted(cols, np.array([[2.0], [3.0]], np.float32))
    rows = np.array([[UNKNOWN], [MISSING], [2], [4], [np.nan], [2.5], [-1], [5], [1e9]], dtype=np.float32)
    h = network_input(m, rows)
    assert h.shape == (9, 5)  # UNKNOWN, MISSING, blue, green, red
    assert h.sum(1).tolist() == [1.0] * 9  # exactly one slot each
    assert h.argmax(1).tolist() == [0, 1, 2, 4] + [UNKNOWN] * 5  # anything not a slot is UNKNOWN
    # embedded, every invalid index looks up UNKNOWN's row
    enc = RawRowEncoder(cols, max_one_hot=0)
    _, codes = enc.prepare(torch.from_numpy(rows))
    e = enc.expand(codes).detach()
    assert all(torch.equal(e[i], e[0]) for i in range(4, 9)) and not torch.equal(e[0], e[1])


# ------------------------------------------------------------------------------------- dates


def test_date_parts_weekday_season_hour_and_imputation() -> None:
    stamps = pd.Series(pd.to_datetime(["2024-03-04 06:00", "2024-03-09 18:00", None, "1969-12-31 00:00",
                                       "2024-09-03 12:00"], utc=True))
    col = Column("when", "datetime", missing_rate=0.2)
    x = encode_frame(pd.DataFrame({"when": stamps}), [col])
    m = build_model(schema_config([col]), generator=torch.Generator().manual_seed(0))
    fit_scaling(m, x, np.zeros(len(x), np.float32), "none")  # unscaled: read the parts directly
    cont, codes = m.encoder.prepare(torch.from_numpy(x))
    median_day = float(np.nanmedian(x[:, 0]))
    assert m.encoder.date_fill.item() == pytest.approx(median_day)
    days, season_sin, season_cos, hour_sin, hour_cos = cont.T
    assert days[2].item() == pytest.approx(median_day)
    known = stamps.notna().to_numpy().copy()  # writable: torch indexes with it
    np.testing.assert_allclose(hour_sin[known].numpy(), np.sin(2 * np.pi * stamps[known].dt.hour / 24), atol=1e-3)
    np.testing.assert_allclose(hour_cos[known].numpy(), np.cos(2 * np.pi * stamps[known].dt.hour / 24), atol=1e-3)
    # March and September are half a year apart: the season's sine flips sign
    assert season_sin[0] * season_sin[4] < 0 and abs(season_sin[0] + season_sin[4]) < 0.1
    flag, weekday = codes.T
    assert flag.tolist() == [0, 0, 1, 0, 0]
    assert weekday[known].tolist() == stamps[known].dt.dayofweek.tolist()  # Monday 0 .. Sunday 6
    h = network_input(m, x)
    assert h.shape[1] == 5 + 1 + 7 and h[:, -7:].sum(1).tolist() == [1.0] * 5


# ------------------------------------------------------------------------- sizes, vectorised


def mixed_schema(n_cat: int, n_num: int = 2) -> list[Column]:
    cats = [Column(f"c{i}", "categorical", 0.1, [f"v{j}" for j in range((3, 40, 200)[i % 3])]) for i in range(n_cat)]
    return [Column(f"n{i}", missing_rate=0.1 * (i % 2)) for i in range(n_num)] + cats + [
        Column("d", "datetime", 0.05), Column("b", "boolean", 0.0, ["False", "True"])]


def mixed_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Encoded rows for mixed_schema(3): 2 numbers, 3 category indices, days, a boolean's index."""
    columns = [rng.standard_normal((n, 2)), rng.integers(0, 5, n), rng.integers(0, 42, n), rng.integers(0, 202, n),
               19000 + 400 * rng.random(n), rng.integers(0, 4, n)]
    return np.column_stack(columns).astype(np.float32)


def test_layer_sizes_match_the_built_model() -> None:
    for cols in (mixed_schema(1), mixed_schema(7, 5), [Column("x")], [Column("c", "categorical", 0, VOCAB3)]):
        m = build_model(schema_config(cols))
        prepared = m.prepare(torch.zeros(3, len(cols)))
        table = m.encoder.embedding.weight.numel() if m.encoder.embedding is not None else 0
        assert network_size(m_cfg := schema_config(cols)) == (prepared.shape[1], m.net[0].in_features, table)
        assert layer_sizes(m_cfg.columns, 32)[1] == m.encoder.n_outputs


def test_forward_is_a_fixed_number_of_ops_however_many_columns() -> None:
    """Columns are grouped by kind with index tensors: no Python loop over columns in forward."""
    def n_nodes(cols: list[Column]) -> int:
        return len(torch.fx.symbolic_trace(build_model(schema_config(cols))).graph.nodes)

    assert n_nodes(mixed_schema(3, 2)) == n_nodes(mixed_schema(30, 20))


# ------------------------------------------------------------------------------ check_splits


def test_check_splits_allows_nan_where_the_schema_says_values_may_be_missing() -> None:
    cols = [Column("a", missing_rate=0.5), Column("b"), Column("c", "categorical", 0, VOCAB3)]
    cfg = schema_config(cols)
    good = np.array([[np.nan, 1.0, 2.0], [1.0, 2.0, 4.0]], np.float32)
    check_splits({"train": Split(good, np.zeros(2, np.float32)), "val": Split(good, np.zeros(2, np.float32))}, cfg)

    def fails(x: np.ndarray, match: str, split: str = "train") -> None:
        splits = {"train": Split(good, np.zeros(2, np.float32)), "val": Split(good, np.zeros(2, np.float32))}
        splits[split] = Split(np.asarray(x, np.float32), np.zeros(len(x), np.float32))
        with pytest.raises(DataError, match=match):
            check_splits(splits, cfg)

    fails([[np.inf, 1, 2], [1, 2, 4]], r"data/train\.parquet: 1 infinite feature values \(column 'a'\)")
    fails([[1, 2, 2], [1, -np.inf, 4]], r"data/val\.parquet: 1 infinite", "val")
    fails([[1, np.nan, 2], [1, 2, 4]], r"column 'b' has missing values in train, but its missing_rate")
    fails([[1, 2, 2.5], [1, 2, 4]], r"column 'c' \(categorical\) holds values that are not category indices 0\.\.4")
    fails([[1, 2, 5], [1, 2, 4]], r"not category indices", "val")
    fails([[1, 2, np.nan], [1, 2, 4]], r"not category indices")
    # val may have gaps where train had none: the model imputes every numeric column
    x = np.array([[1, np.nan, 2], [1, 2, 4]], np.float32)
    check_splits({"train": Split(good, np.zeros(2, np.float32)), "val": Split(x, np.zeros(2, np.float32))}, cfg)
    # without a schema nothing may be missing, as before
    with pytest.raises(DataError, match="1 missing or infinite feature values"):
        check_splits({"train": Split(good[:, :2], np.zeros(2, np.float32)),
                      "val": Split(good[:, :2], np.zeros(2, np.float32))}, make_config(n_features=2))


# --------------------------------------------------------------------------- the model file


def test_save_load_round_trip_with_columns(tmp_path) -> None:
    cols = mixed_schema(3)
    rng = np.random.default_rng(0)
    x = mixed_rows(rng, 50)
    x[::7, 0] = np.nan
    m = fitted(cols, x, rng.random(50).astype(np.float32))
    cfg = schema_config(cols)
    path = tmp_path / "model.pt"
    save_model(path, m, cfg)
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["columns"][0] == {"name": "n0", "kind": "numeric", "missing_rate": 0.0, "vocabulary": None}
    assert {"encoder.num_fill", "encoder.date_fill", "encoder.embedding.weight"} <= blob["state_dict"].keys()
    assert not any(k.endswith(("_cols", "slot_position", "slot_value")) for k in blob["state_dict"])  # structure
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg
    probe = torch.from_numpy(x)
    probe[0, 3] = 1e6  # an unseen index: UNKNOWN in both
    assert torch.equal(loaded(probe), m(probe))
    save_model(tmp_path / "again.pt", loaded, loaded_cfg)
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()


def test_onnx_export_carries_the_input_layer(tmp_path) -> None:
    """The dynamo export holds imputation, dates, one-hots, embeddings and the target transform:
    the same predictions from the encoded matrix as torch, bad indices included."""
    ort = pytest.importorskip("onnxruntime")
    cols = mixed_schema(3)
    rng = np.random.default_rng(1)
    x = mixed_rows(rng, 40)
    x[::5, 1] = np.nan
    x[::6, 5] = np.nan
    m = fitted(cols, x, rng.lognormal(size=40).astype(np.float32), target_transform="log1p")
    program = torch.onnx.export(m, (torch.zeros(2, len(cols)),), dynamo=True, external_data=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    probe = x.copy()
    probe[0, 2], probe[1, 3], probe[2, 4] = 2.5, np.nan, -1.0
    got = session.run(None, {session.get_inputs()[0].name: probe})[0]
    want = m(torch.from_numpy(probe)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # in the target's units: expm1 of the de-standardised network output
    raw = m.raw(torch.from_numpy(probe)).detach()
    torch.testing.assert_close(torch.from_numpy(want), torch.expm1(raw * m.y_std + m.y_mean))


# ---------------------------------------------------------------------------- end to end


def mixed_frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers with gaps, a colour, a 60-city column (embedded), a flag and timestamps with a
    weekend effect; y depends on all of them."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n), rng.uniform(0, 10, n)
    color = rng.choice(VOCAB3, n)
    city = rng.integers(0, 60, n)
    flag = rng.random(n) < 0.5
    day = pd.Timestamp("2021-01-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 700, n), unit="D")
    y = (1.5 * a + 0.3 * b + np.select([color == "red", color == "green"], [2.0, -1.0], 0.0)
         + 2 * np.sin(city) + 3.0 * (day.dayofweek >= 5) + flag + 0.3 * rng.standard_normal(n))
    frame = pd.DataFrame({"a": a, "b": b, "color": color, "city": [f"c{i}" for i in city], "flag": flag, "day": day})
    frame.loc[rng.random(n) < 0.1, "a"] = np.nan
    frame.loc[rng.random(n) < 0.05, "day"] = pd.NaT
    frame.loc[rng.random(n) < 0.05, "color"] = None
    return frame, y.astype(np.float32)


def test_a_mixed_table_trains_end_to_end() -> None:
    frame, y = mixed_frame(2000)
    cols = [Column("a", "numeric", 0.1), Column("b"), Column("color", "categorical", 0.05, VOCAB3),
            Column("city", "categorical", 0.0, [f"c{i}" for i in range(60)]),
            Column("flag", "boolean", 0.0, ["False", "True"]), Column("day", "datetime", 0.05)]
    x = encode_frame(frame, cols)
    meta = Meta(task="regression", feature_names=[c.name for c in cols], target="y", columns=cols)
    k = 1500
    splits = {"train": Split(x[:k], y[:k]), "val": Split(x[k:], y[k:])}
    p = TrainParams(hidden=(32,), epochs=40, batch_size=64, lr=0.01, early_stopping={"patience": 8})
    result = train_model(p, splits, meta)
    assert result.config.columns == cols and result.config.target_transform is None
    assert result.model.encoder.n_embedded == 1  # city: 60 categories > max_one_hot
    baseline = float(np.mean((y[k:] - y[:k].mean()) ** 2))  # the constant model's val MSE (about 9)
    assert result.metrics["best_val_loss"] < 0.15 * baseline
    # rows it never saw: an unknown city, a missing colour, no date
    raw = pd.DataFrame({"a": [np.nan], "b": [5.0], "color": [None], "city": ["atlantis"], "flag": [True],
                        "day": [None]})
    assert torch.isfinite(result.model(torch.from_numpy(encode_frame(raw, cols)))).all()


def test_model_config_takes_the_schema_and_none_stays_none() -> None:
    cols = [Column("a", missing_rate=0.1), Column("c", "categorical", 0.0, VOCAB3)]
    p = TrainParams()
    with_schema = model_config(p, Meta(task="regression", feature_names=["a", "c"], target="y", columns=cols))
    assert with_schema.columns == cols and with_schema.n_features == 2
    plain = model_config(p, Meta(task="regression", feature_names=["a", "c"], target="y"), np.ones(5, np.float32))
    assert plain.columns is None and plain.target_transform is None
    assert "columns" not in plain.to_dict() and "target_transform" not in plain.to_dict()
