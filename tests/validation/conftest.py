"""Small generated splits shared by the validation tests (each module generates its own copy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stages import generate
from stages.core.contracts import SPLITS
from stages.core.params import DataParams
from stages.data.splits import read_split_frame
from tests.data.conftest import messy_frame


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


def generate_file(tmp_path_factory: pytest.TempPathFactory, name: str, frame: pd.DataFrame, target: str,
                  **data: object) -> tuple[dict, dict]:
    """`frame` written as a user's CSV and ingested (source: file): raw splits and meta.json."""
    out = tmp_path_factory.mktemp(name)
    path = out / "raw" / f"{name}.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    return _generate_into(out / "data", source="file", path=str(path), target=target, **data)


def _generate_into(out: Path, **data: object) -> tuple[dict, dict]:
    meta = generate.run(DataParams(**data), out)
    return meta, {s: read_split_frame(s, out) for s in SPLITS}


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    # tests/data/conftest.messy_frame(600): 606 rows (6 exact duplicates), 5 without a target; train
    # 421, val 90, test 90 rows of numbers with gaps and outliers, categories, booleans, two date formats
    return generate_file(tmp_path_factory, "messy", messy_frame(600), "price")
