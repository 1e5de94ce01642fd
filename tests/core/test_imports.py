"""Each stage imports what it runs, no more: the heavy packages a fresh process holds after
importing a stage's entry module (and, for generate and evaluate, after running it).

A small table's run is mostly fixed cost, and most of that is imports (README, Tests and
benchmarks: the small-table point): torch costs about a second per process, Great Expectations
about three, matplotlib a few tenths. A package that moves into a module a stage imports shows
up here as a changed set; if the stage really needs it, update the set below with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, subprocess_env

# packages that cost a tenth of a second or more to import here; numpy, pydantic and yaml every
# stage needs (params), so they are not listed
HEAVY = ("torch", "great_expectations", "matplotlib", "dvclive", "dvc", "onnx", "onnxscript", "onnxruntime",
         "pandas", "pyarrow", "scipy", "sklearn", "prefect", "sqlalchemy", "altair", "optuna")

# what importing `stages.<name>` loads (the stage's error paths, e.g. bad params, stop here).
# pyarrow imports pandas on its first conversion or parquet read, so a stage that touches
# parquet holds pandas whether it asks for it or not.
ON_IMPORT = {
    "generate": {"pandas", "pyarrow"},
    # Great Expectations' own imports: pandas, scipy (its expectations), sqlalchemy, altair
    "validate": {"altair", "great_expectations", "pandas", "pyarrow", "scipy", "sqlalchemy"},
    "train": {"pandas", "pyarrow", "torch"},  # dvclive when it writes (main)
    "evaluate": set(),  # scores the outputs and targets train saved; matplotlib when it draws
    "card": set(),  # reads JSON and PNG files
}

# what running `stages.<name>` on a small numeric table loads
ON_RUN = {
    "generate": {"pandas", "pyarrow"},
    "evaluate": {"matplotlib"},
}

PROBE = """
import atexit, json, sys
HEAVY = {heavy!r}
atexit.register(lambda: print("LOADED", json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY)))))
import stages.{name} as stage
if {run!r}:
    from stages.core.errors import run_main
    run_main(stage.main, "{name}")
"""


def loaded(name: str, cwd: Path, run: bool = False) -> set[str]:
    """The HEAVY packages a fresh interpreter holds after importing (and running) the stage."""
    code = PROBE.format(heavy=HEAVY, name=name, run=run)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("LOADED ")][-1]
    return set(json.loads(line.removeprefix("LOADED ")))


@pytest.mark.parametrize("name", sorted(ON_IMPORT))
def test_a_stage_entry_imports_only_what_it_runs(name, tmp_path):
    assert loaded(name, tmp_path) == ON_IMPORT[name]


def _evaluate_inputs(work: Path) -> None:
    """A small numeric table, a saved (untrained) model, its outputs and the targets: what
    evaluate reads."""
    from stages.core.contracts import HISTORY_PATH, MODEL_PATH, history_csv, write_model_outputs
    from stages.core.params import DataParams
    from stages.data.splits import load_splits
    from stages.generate import run as generate
    from stages.training.models import build_model, predict, save_model
    from tests.conftest import model_config

    meta = generate(DataParams(n_samples=300), work / "data")
    cfg = model_config(n_features=meta.n_features, feature_names=meta.feature_names)
    model = build_model(cfg)
    (work / MODEL_PATH).parent.mkdir(parents=True)
    save_model(work / MODEL_PATH, model, cfg)
    splits = load_splits(work / "data", meta)
    outputs = {name: predict(model, split.x) for name, split in splits.items()}
    write_model_outputs(outputs, {name: split.y for name, split in splits.items()}, cfg, work / MODEL_PATH,
                        work / "data", work / "models/outputs.npz")
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "lr": 0.003, "epoch_seconds": 0.01}
               for e in range(1, 4)]
    (work / HISTORY_PATH).parent.mkdir(parents=True)
    (work / HISTORY_PATH).write_text(history_csv(history))
    assert np.isfinite(outputs["test"]).all()


@pytest.mark.parametrize("name", sorted(ON_RUN))
def test_a_stage_run_loads_only_what_it_needs(name, tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    if name == "evaluate":
        _evaluate_inputs(tmp_path)
    assert loaded(name, tmp_path, run=True) == ON_RUN[name]
    assert (tmp_path / ("metrics/eval.json" if name == "evaluate" else "data/meta.json")).exists()


TRIAL_KEY_PROBE = """
import sys
from stages.core.params import EvaluateParams, TrainParams
from stages.tools.sweep import code_fingerprint, trial_key
trial_key(TrainParams(device="cpu"), EvaluateParams(), "data", code_fingerprint())
print("LOADED", "torch" in sys.modules)
"""


def test_a_cached_trial_key_needs_no_torch(tmp_path):
    """`fitline sweep`/`compare`/`tune` rerun with every trial cached: the keys cost no torch
    import; and the device and version in them are what torch itself reports."""
    proc = subprocess.run([sys.executable, "-c", TRIAL_KEY_PROBE], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.split() == ["LOADED", "False"]
    import torch

    from stages.tools.sweep import torch_version, trial_device
    from stages.training.loop import resolve_device

    assert torch_version() == torch.__version__
    assert trial_device("auto") == resolve_device("auto").type and trial_device("cpu") == "cpu"
