"""Out of memory or disk: refused or reported in one line, the previous outputs kept."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stages.core.errors import ResourceError, disk_full
from stages.core.params import DataParams
from stages.core.resources import GIB, check_fits
from stages.generate import run as generate
from tests.conftest import subprocess_env


def _stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True)


def _one_error_line(proc: subprocess.CompletedProcess, stage: str) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if f"fitline {stage}: error" in x]
    return line


def test_check_fits_names_the_estimate_the_parts_and_the_remedy():
    check_fits("x", {"a": GIB, "b": GIB}, "lower x.y", available=3 * GIB)  # 2 of 3 GiB: fits
    with pytest.raises(ResourceError, match=r"^x needs about 3.0 GiB of memory \(a 1.0 GiB, b 2.0 GiB\) but "
                                            r"3.0 GiB is available; lower x.y$"):
        check_fits("x", {"a": GIB, "b": 2 * GIB}, "lower x.y", available=3 * GIB)


def test_generate_refuses_a_chunk_that_cannot_fit_and_keeps_the_data(tmp_path):
    """n_features: 100000 (a 7.45 GiB chunk here and more) ended in a traceback or a kill."""
    generate(DataParams(n_samples=300, seed=1), tmp_path / "data")
    before = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()}
    (tmp_path / "params.yaml").write_text("data: {n_samples: 1000000, n_features: 100000}\n")
    line = _one_error_line(_stage(["stages.generate"], tmp_path), "generate")
    assert "generate needs about" in line and "lower data.chunk_rows (now 1000000) or data.n_features" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()} == before


def test_train_refuses_a_model_that_cannot_fit_before_allocating_it(tmp_path):
    """hidden: [100000, 100000] asked for a 40 GB allocation and died in a traceback."""
    generate(DataParams(n_samples=300, seed=1), tmp_path / "data")
    (tmp_path / "params.yaml").write_text("train: {hidden: [100000, 100000], epochs: 1}\n")
    line = _one_error_line(_stage(["stages.train"], tmp_path), "train")
    assert "train (1e+10 parameters on cpu) needs about" in line and "lower train.hidden (now [100000, 100000])" in line
    assert not (tmp_path / "models").exists()


def test_disk_full_is_found_behind_torchs_runtime_error():
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
    except RuntimeError as exc:
        assert disk_full(exc).errno == 28
    assert disk_full(RuntimeError("something else")) is None


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_during_the_checkpoint_save_is_one_line(tmp_path, tiny_disk):
    """A full disk while saving the checkpoint gave 2-3 chained tracebacks."""
    generate(DataParams(n_samples=400, seed=3), tmp_path / "data")
    (tmp_path / "params.yaml").write_text("train: {hidden: [256, 256], epochs: 4, checkpoint_every: 1}\n")
    (tmp_path / "checkpoints").symlink_to(tiny_disk)
    line = _one_error_line(_stage(["stages.train"], tmp_path), "train")
    assert line.startswith("fitline train: error: no space left on device") and "free disk space" in line
    assert not (tmp_path / "models").exists() and list(tiny_disk.iterdir()) == []  # no torn temp file left
