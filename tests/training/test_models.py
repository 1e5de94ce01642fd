"""Model building, built-in scaling, and the saved-model format."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch

from stages.core.contracts import ModelConfig
from stages.core.errors import DataError
from stages.training.models import build_model, fit_scaling, load_model, save_model, weight_tensors
from tests.conftest import model_config


def config(**kw) -> ModelConfig:
    return model_config(**kw)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_shapes() -> None:
    x = torch.randn(5, 3)
    assert build_model(config())(x).shape == (5,)
    assert build_model(config(model="linear"))(x).shape == (5,)
    clf = config(task="classification", classes=[0, 1, 2], n_outputs=3, loss="cross_entropy")
    assert build_model(clf)(x).shape == (5, 3)
    assert build_model(replace(clf, model="linear"))(x).shape == (5, 3)


def test_architecture_follows_config() -> None:
    m = build_model(config(hidden=[7, 5], activation="tanh", dropout=0.2))
    linears = [l for l in m.net if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(3, 7), (7, 5), (5, 1)]
    assert sum(isinstance(l, torch.nn.Tanh) for l in m.net) == 2
    # penalties see weight matrices only
    assert [tuple(w.shape) for w in weight_tensors(m)] == [(7, 3), (5, 7), (1, 5)]


def test_init_is_seeded_and_linear_starts_at_zero() -> None:
    a, b = build_model(config(), generator=gen(1)), build_model(config(), generator=gen(1))
    c = build_model(config(), generator=gen(2))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    assert all(torch.count_nonzero(p) == 0 for p in build_model(config(model="linear")).parameters())
    assert all(torch.count_nonzero(l.bias) == 0 for l in a.net if isinstance(l, torch.nn.Linear))


def test_bad_names_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'tree'"):
        build_model(config(model="tree"))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        build_model(config(activation="swish"))


def test_model_standardises_raw_features_itself() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 3)) * [1000.0, 1.0, 0.001] + [5000, 0, 1]).astype(np.float32)
    y = (x[:, 0] / 100 + rng.standard_normal(200)).astype(np.float32)
    m = build_model(config(), generator=gen())
    fit_scaling(m, x, y, "standard")
    sd = m.state_dict()
    assert {"x_mean", "x_std", "y_mean", "y_std"} <= sd.keys()
    np.testing.assert_allclose(sd["x_mean"].numpy(), x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(sd["x_std"].numpy(), x.astype(np.float64).std(0), rtol=1e-5)
    xt = torch.from_numpy(x)
    z = m.net((xt - xt.mean(0)) / xt.std(0, unbiased=False)).squeeze(-1)
    torch.testing.assert_close(m(xt), z * float(y.std()) + float(y.mean()), rtol=1e-4, atol=1e-3)


def test_scaling_none_and_constant_columns() -> None:
    x = np.array([[1.0, 2.0], [3.0, 2.0]], dtype=np.float32)
    m = build_model(config(n_features=2, feature_names=["a", "b"]))
    fit_scaling(m, x, np.array([0.0, 1.0]), "none")
    assert torch.equal(m.x_mean, torch.zeros(2)) and torch.equal(m.x_std, torch.ones(2))
    fit_scaling(m, x, np.array([0.0, 1.0]), "standard")
    assert m.x_std.tolist() == [1.0, 1.0]  # constant column b passes through with std 1
    with pytest.raises(ValueError, match="unknown scaling 'minmax'"):
        fit_scaling(m, x, None, "minmax")


def test_save_load_round_trip(tmp_path) -> None:
    cfg = config(dropout=0.1)
    m = build_model(cfg, generator=gen())
    fit_scaling(m, np.random.default_rng(0).standard_normal((50, 3)), np.arange(50.0), "standard")
    path = tmp_path / "models" / "model.pt"
    save_model(path, m, cfg)
    blob = torch.load(path, weights_only=True)
    assert blob["config"] == cfg.to_dict() and set(blob["state_dict"]) == set(m.state_dict())
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg and not loaded.training
    x = torch.randn(10, 3)
    m.eval()
    assert torch.equal(loaded(x), m(x))
    assert [p.name for p in tmp_path.joinpath("models").iterdir()] == ["model.pt"]  # no temp file left
    save_model(tmp_path / "again.pt", m, cfg)  # same model -> same bytes (DVC hashes them)
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()


def test_load_model_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(DataError, match=r"missing\.pt: model file not found"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.pt: not a readable model file"):
        load_model(bad)
    torn = tmp_path / "torn.pt"
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "config": config().to_dict()}, buf)
    torn.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match=r"torn\.pt: not a readable model file"):
        load_model(torn)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {}, "config": config().to_dict()}, wrong)
    with pytest.raises(DataError, match=r"wrong\.pt: model does not match its config"):
        load_model(wrong)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(DataError, match=r"other\.pt: not a fitline model file"):
        load_model(other)


# the state_dict digests and the generator's next draw of three seeded, scaled models, recorded
# with the code before the raw-row input layer existed: the numeric-only model must not change
# by a bit (the default run's model.pt and metrics stay identical)
NUMERIC_DIGESTS = {
    "mlp": ("8855846d541d930be54df18d88dd29f92733a0182f1aba1bdef249920fa189ad", 0.8548295497894287),
    "linear": ("528b96f4389e57848b41c5bba7e8996cabf9b173e8fbcf05c416a809b1df91ab", 0.004263520240783691),
    "classifier": ("e14883b57bf6e72ae1c850b375ca8c5037f5189a77645555581be2b1c4006603", 0.7664756178855896),
}


def test_the_numeric_only_model_is_unchanged_bit_for_bit() -> None:
    import hashlib

    configs = {"mlp": {}, "linear": {"model": "linear", "hidden": []},
               "classifier": {"task": "classification", "classes": [0, 1, 2], "n_outputs": 3, "loss": "cross_entropy",
                              "dropout": 0.1, "activation": "tanh"}}
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    for name, kw in configs.items():
        g = gen(3)
        m = build_model(config(**kw), generator=g)
        fit_scaling(m, x, x[:, 0] * 3 + 1, "standard")
        assert m.encoder is None and not any(k.startswith("encoder") for k in m.state_dict())
        h = hashlib.sha256()
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(v.numpy().tobytes())
        assert (h.hexdigest(), torch.rand(1, generator=g).item()) == NUMERIC_DIGESTS[name], name
        assert "columns" not in config(**kw).to_dict() and "target_transform" not in config(**kw).to_dict()
