"""Code identity: which source files of `stages` a piece of the pipeline runs, from its imports.

The checkpoint fingerprint and the sweep trial cache key hash the files found here, and a test
compares dvc.yaml's code deps with the same walk: no hand-kept list of modules (one once left
out the module the training loop takes its batches from, and sweeps served stale trials).

The walk is static (the `import` statements of each file, function-level ones included), so it
sees a module that is imported lazily, and costs no import.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "stages"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The source file of module `name` (a package: its __init__.py); None outside `stages`."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


@functools.cache
def _direct_imports(path: Path, mtime_ns: int) -> frozenset[str]:
    """Modules of `stages` that the file at `path` imports anywhere in its body."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from stages.training import loop` imports the submodule loop
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return frozenset(n for n in names if module_file(n) is not None)


def imported_files(*roots: str) -> list[Path]:
    """Source files of `roots` and of every `stages` module they import, transitively, sorted.

    A package's __init__.py counts when the package itself is imported (by Python, importing
    stages.training.loop runs stages/training/__init__.py too)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        path = module_file(name)
        todo += _direct_imports(path, path.stat().st_mtime_ns)
    return sorted({module_file(n) for n in seen})


def code_digest(*roots: str) -> str:
    """sha256 over the relative paths and bytes of imported_files(*roots)."""
    h = hashlib.sha256()
    for path in imported_files(*roots):
        h.update(path.relative_to(PACKAGE_DIR.parent).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


# what a trained model depends on (checkpoints), and what a sweep trial runs (its cache key)
TRAINING_CODE = ("stages.training.loop",)
TRIAL_CODE = ("stages.training.loop", "stages.evaluation.scoring")
