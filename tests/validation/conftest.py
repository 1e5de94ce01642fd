"""Small generated splits shared by the validation tests (each module generates its own copy)."""

from __future__ import annotations

import pytest

from stages import generate
from stages.core.contracts import SPLITS
from stages.core.params import DataParams
from stages.data.splits import read_split_frame


def _generate(tmp_path_factory: pytest.TempPathFactory, name: str, **data: object) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp(name)
    meta = generate.run(DataParams(**data), out)
    return meta, {s: read_split_frame(s, out) for s in SPLITS}


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    # 600 rows: train 420, val 90, test 90; friedman features are uniform on [0, 1]
    return _generate(tmp_path_factory, "regression", kind="friedman", n_samples=600, n_features=5, seed=3)


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return _generate(tmp_path_factory, "classes", kind="classification", n_samples=600, n_features=4,
                     n_informative=2, n_classes=3, noise=0.05, seed=5)
