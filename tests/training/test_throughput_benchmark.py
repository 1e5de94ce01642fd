"""benchmarks/train_throughput.py's categorical case runs (its figures are in the README / report;
timing is not asserted here: a shared CI machine would make it flaky)."""

from __future__ import annotations

import importlib.util

import numpy as np

from stages.core.contracts import Meta
from stages.core.params import TrainParams
from stages.data.splits import Split
from tests.conftest import ROOT


def _benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_categorical_case_compares_against_all_numeric_data(capsys) -> None:
    bench = _benchmark()
    rng = np.random.default_rng(0)
    splits = {s: Split(rng.standard_normal((n, 3)).astype(np.float32), rng.standard_normal(n).astype(np.float32))
              for s, n in (("train", 64), ("val", 32))}
    meta = Meta(task="regression", feature_names=["a", "b", "c"], target="y")
    mixed, mixed_meta = bench.with_columns(splits, meta, 4, "categorical")
    assert mixed["train"].x.shape == (64, 7) and [c.kind for c in mixed_meta.columns[3:]] == ["categorical"] * 4
    assert mixed_meta.columns[5].vocabulary == [f"v{j}" for j in range(5)]
    numeric, numeric_meta = bench.with_columns(splits, meta, 4, "numeric")
    assert numeric["train"].x.shape == (64, 7) and numeric_meta.columns is None
    bench.compare_categorical(TrainParams(hidden=(4,), epochs=1, batch_size=32, early_stopping={"patience": None}),
                              splits, meta, 4, repeats=1)
    out = capsys.readouterr().out
    assert "+ 4 categorical columns" in out and out.count("ratio categorical /") == 2
