"""The contracts between stages: every path dvc.yaml names comes from one module, and one check
that a model fits the data."""

from __future__ import annotations

import ast
import os
import stat
import re
from pathlib import Path

import pytest
import yaml

from stages.core import contracts
from stages.core.errors import DataError
from tests.conftest import ROOT, model_config

META = contracts.Meta(task="regression", feature_names=["a", "b"], target="y")


def _outs(stage: dict) -> list[str]:
    entries = stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_every_stage_output_is_a_contracts_path():
    """dvc.yaml's outputs (data, models, metrics, reports) are the paths contracts names, so a
    stage that writes a file writes it where DVC looks."""
    named = {str(v) for k, v in vars(contracts).items() if k.isupper() and isinstance(v, (str, Path))}
    named |= {str(contracts.split_path(s)) for s in contracts.SPLITS}
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o for stage in dvc.values() for o in _outs(stage)]
    roots = {o.split("/")[0] for o in outs}
    assert roots <= {"data", "reports", "models", "checkpoints", "metrics", "dvclive"}
    missing = [o for o in outs if o not in named and not o.startswith(contracts.LIVE_DIR + "/")]
    assert not missing, f"dvc.yaml outputs not in stages/core/contracts.py: {missing}"


def test_metrics_files_are_the_stages_metrics_outputs():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    metrics = {next(iter(m)) for stage in dvc.values() for m in stage.get("metrics", [])}
    assert {str(p) for p in contracts.METRICS_FILES.values()} == metrics


@pytest.mark.parametrize(("cfg", "why"), [
    ({"task": "classification", "feature_names": ["a", "b"]}, "task 'classification'"),
    ({"task": "regression", "feature_names": ["a", "c"]}, r"features \['a', 'c'\]"),
    ({"task": "regression", "feature_names": ["b", "a"]}, r"features \['b', 'a'\]"),  # the order counts
    ({"task": "regression", "feature_names": ["a"], "n_features": 1}, r"features \['a'\]"),
])
def test_a_model_for_other_data_is_refused_naming_both(cfg, why):
    cfg = model_config(**cfg)
    with pytest.raises(DataError, match=rf"models/model.pt: trained for .*{why}.*data/meta.json has task 'regression'"
                                        r".*\(re-run the train stage\)"):
        contracts.check_model_fits(cfg, META)


def test_a_model_for_this_data_passes():
    contracts.check_model_fits(model_config(feature_names=["a", "b"], n_features=2, hidden=[4]), META)


PATH_LIKE = re.compile(r"(data|models|metrics|reports|checkpoints|dvclive|\.dvc)/[\w.\-/{}]*|params\.yaml|meta\.json"
                       r"|[\w\-{}]+\.(parquet|onnx|pt|csv|md|png)")


def _path_constants(path: Path) -> list[tuple[int, str]]:
    """String constants that are a path and nothing else (messages that mention one are fine)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
            and PATH_LIKE.fullmatch(n.value.strip("/"))]


NOT_PATHS = {"ai.onnx", "ai.onnx.ml"}  # ONNX operator domains


def test_no_module_but_contracts_spells_a_pipeline_path():
    found = {f"{p.relative_to(ROOT)}:{line}": text
             for folder in ("stages", "flows") for p in sorted((ROOT / folder).rglob("*.py"))
             if p.name != "contracts.py" for line, text in _path_constants(p) if text not in NOT_PATHS}
    assert not found, f"paths spelled outside stages/core/contracts.py: {found}"


def test_the_path_check_finds_a_spelled_path(tmp_path):
    (tmp_path / "m.py").write_text('"""data/meta.json in a docstring is prose."""\nX = Path("metrics/eval.json")\n'
                                   'Y = f"{root}/reports/fit.md"\nZ = "see data/meta.json for the task"\n')
    assert [t for _, t in _path_constants(tmp_path / "m.py")] == ["metrics/eval.json", "/reports/fit.md"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomically_written_files_follow_the_umask(tmp_path, umask):
    """They were 0600 whatever the umask (mkstemp's mode)."""
    from stages.core.io import write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
