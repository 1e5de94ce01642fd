"""Reading and writing pipeline artifacts: atomic writes, JSON, PNG figures, file digests.

A stage writes every output to a temporary file in the destination folder and renames it into
place, so a failed or killed stage never leaves a half-written file and never replaces a good
artifact with a bad one (rename within one filesystem is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _umask() -> int:
    """The process's umask, read without changing it where the OS says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but rarely reached)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it onto `dest`, else delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600; the artifact gets what any new file would (0644 usually)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON (stable bytes for DVC), atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising DataError with the path when it is missing or malformed."""
    from stages.core.errors import DataError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run the stage that produces it first)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, tuples and arrays as lists, non-finite floats
    as strings ('inf', 'nan'; JSON has no such numbers), anything else as its str()."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_png(fig: Figure, dest: str | os.PathLike[str]) -> None:
    """A matplotlib figure as PNG, atomically; no Software/date metadata, so the same inputs
    give the same bytes (DVC sees no change)."""
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
