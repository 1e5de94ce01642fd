"""Code identity: the import walk, dvc.yaml's code deps, and the sweep's trial key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stages.core import code
from stages.tools.sweep import code_fingerprint
from tests.conftest import ROOT

STAGES = ("generate", "validate", "train", "evaluate", "export")


def _rel(path: Path) -> str:
    return path.relative_to(code.PACKAGE_DIR.parent).as_posix()


def _fake_package(root: Path, files: dict[str, str], monkeypatch) -> None:
    for name, text in files.items():
        (root / "stages" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "stages" / name).write_text(text)
    monkeypatch.setattr(code, "PACKAGE_DIR", root / "stages")


def test_walk_follows_lazy_and_submodule_imports(tmp_path, monkeypatch):
    _fake_package(tmp_path, {
        "__init__.py": "",
        "entry.py": "from stages.pkg import helper\n\ndef main():\n    from stages.lazy import thing\n",
        "pkg/__init__.py": "",
        "pkg/helper.py": "import numpy\nfrom stages.pkg.deep import x\n",
        "pkg/deep.py": "x = 1\n",
        "pkg/unused.py": "",
        "lazy.py": "thing = 1\n",
    }, monkeypatch)
    found = {_rel(p) for p in code.imported_files("stages.entry")}
    assert found == {"stages/__init__.py", "stages/entry.py", "stages/pkg/__init__.py", "stages/pkg/helper.py",
                     "stages/pkg/deep.py", "stages/lazy.py"}


def test_code_digest_changes_with_any_imported_file_only(tmp_path, monkeypatch):
    _fake_package(tmp_path, {"__init__.py": "", "a.py": "from stages import b\n", "b.py": "", "c.py": ""},
                  monkeypatch)
    before = code.code_digest("stages.a")
    (tmp_path / "stages" / "c.py").write_text("# not imported by a\n")
    assert code.code_digest("stages.a") == before
    (tmp_path / "stages" / "b.py").write_text("# imported by a\n")
    assert code.code_digest("stages.a") != before


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if d.startswith("stages/")]


@pytest.mark.parametrize("name", STAGES)
def test_dvc_yaml_code_deps_cover_what_each_stage_imports(name):
    """Every module a stage loads is a dep (itself or its folder); every code dep is used."""
    deps = _code_deps(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name])
    used = [_rel(p) for p in code.imported_files(f"stages.{name}") if p.stat().st_size > 0]  # empty __init__s
    missing = [f for f in used if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"dvc.yaml stage {name!r} misses code deps: {missing}"
    stale = [d for d in deps if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in used)]
    assert not stale, f"dvc.yaml stage {name!r} lists code it does not import: {stale}"


def test_sweep_trial_key_and_checkpoints_cover_every_module_training_imports(tmp_path, monkeypatch):
    """Appending a line to any module a trial runs (the batch slicing in distributed.py
    included: a hand-kept list once missed it) invalidates cached trials."""
    copy = tmp_path / "stages"
    shutil.copytree(code.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PACKAGE_DIR", copy)
    base = code_fingerprint()
    files = code.imported_files(*code.TRIAL_CODE)
    assert set(code.imported_files(*code.TRAINING_CODE)) <= set(files)
    for must in ("training/distributed.py", "training/models.py", "training/optim.py", "evaluation/metrics.py"):
        assert copy / must in files
    for path in files:
        before = path.read_bytes()
        path.write_bytes(before + b"# an edit\n")
        assert code_fingerprint() != base, path
        path.write_bytes(before)
    assert code_fingerprint() == base
