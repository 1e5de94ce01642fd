"""Data-parallel training: the sharding arithmetic on crafted inputs, and real 2-process gloo
runs (torchrun, the params-driven launch, hand-started ranks) against single-process training."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stages.core.contracts import Meta, load_meta
from stages.core.errors import DataError, ParamsError
from stages.core.params import DataParams, TrainParams
from stages.data.splits import frame_to_split, load_splits, read_split, read_split_frame
from stages.generate import run as generate
from stages.training import distributed
from stages.training.distributed import (
    DistributedError,
    ShardedTraining,
    World,
    env_world,
    eval_block,
    pick_backend,
    shard_epoch,
)
from stages.training.loop import train_model
from stages.training.models import build_model, load_model
from tests.conftest import ROOT, model_config, subprocess_env

# Tolerances of a 2-rank run against one process (relative, on the final/best train and val
# losses; 10x that on every weight): the runs differ only in the order of float32 sums. Adam's
# is wider: it divides by sqrt(v), which amplifies last-bit differences of near-zero gradients.
GD_RTOL = 1e-5
ADAM_RTOL = 1e-4


# ------------------------------------------------------------------------------ decision logic


def test_env_world_reads_what_torchrun_sets() -> None:
    assert env_world({}) == distributed.SINGLE
    w = env_world({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (w.rank, w.size, w.local_rank, w.is_main, w.active) == (2, 4, 0, False, True)
    assert env_world({"WORLD_SIZE": "1", "RANK": "0"}).active is False
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(DistributedError, match="WORLD_SIZE"):
            env_world(bad)


def test_backend_follows_the_device() -> None:
    assert pick_backend("auto", "cpu") == "gloo"
    assert pick_backend("auto", "cuda") == "nccl"
    assert pick_backend("gloo", "cuda") == "gloo"
    assert pick_backend("auto", "auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    with pytest.raises(ParamsError, match="'nccl' needs CUDA"):
        pick_backend("nccl", "cpu")
    with pytest.raises(ValueError, match="'mpi'"):
        pick_backend("mpi", "cpu")


@pytest.mark.parametrize(("n", "batch", "size"), [(10, 4, 2), (11, 4, 2), (9, 4, 3), (13, 5, 4), (7, 7, 2), (5, 8, 3),
                                                  (100, 32, 3), (1, 4, 2)])
def test_shards_cut_every_global_batch_into_rank_pieces(n: int, batch: int, size: int) -> None:
    shards = [shard_epoch(n, batch, World(rank=r, size=size)) for r in range(size)]
    single = shard_epoch(n, batch)
    assert single.rows is None and [s[:2] for s in single.steps] == [(i, min(i + batch, n)) for i in range(0, n, batch)]
    assert len({len(s.steps) for s in shards}) == 1 == len({len(single.steps)})  # same step count everywhere
    for k, (g_lo, g_hi, _) in enumerate(single.steps):
        pieces = [sh.rows[lo:hi] for sh in shards for lo, hi, scale in [sh.steps[k]] if scale > 0]
        assert np.array_equal(np.concatenate(pieces), np.arange(g_lo, g_hi))  # in order, disjoint, complete
        for sh in shards:
            lo, hi, scale = sh.steps[k]
            assert hi - lo >= 1  # never an empty forward
            assert scale == pytest.approx((hi - lo) * size / (g_hi - g_lo) if scale else 0.0)
        assert sum(sh.steps[k][2] for sh in shards) == pytest.approx(size)


def test_scaled_rank_gradients_average_to_the_global_batch_gradient() -> None:
    """What DDP computes (the mean over ranks of each rank's scaled loss gradient) is the
    single process's gradient for every step, short and padded last batches included."""
    rng = np.random.default_rng(0)
    n, batch, size = 23, 8, 3  # last global batch: 7 rows over 3 ranks
    x, y = torch.tensor(rng.standard_normal((n, 4)), dtype=torch.float32), torch.tensor(rng.standard_normal(n), dtype=torch.float32)
    cfg = model_config(n_features=4, hidden=[5], activation="tanh")
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))

    def grad(xb: torch.Tensor, yb: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        model.zero_grad()
        (torch.nn.functional.mse_loss(model.raw(xb), yb) * scale).backward()
        return torch.cat([p.grad.ravel() for p in model.parameters()])

    shards = [shard_epoch(n, batch, World(rank=r, size=size)) for r in range(size)]
    for k, (lo, hi, _) in enumerate(shard_epoch(n, batch).steps):
        per_rank = [grad(x[sh.rows[a:b]], y[sh.rows[a:b]], s) for sh in shards for a, b, s in [sh.steps[k]]]
        torch.testing.assert_close(torch.stack(per_rank).mean(0), grad(x[lo:hi], y[lo:hi]), rtol=1e-5, atol=1e-6)


def test_eval_blocks_partition_a_split() -> None:
    for n, size in [(10, 3), (2, 4), (0, 2)]:
        blocks = [eval_block(n, World(rank=r, size=size)) for r in range(size)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))


def test_single_process_sharded_training_is_the_plain_loop() -> None:
    cfg = model_config(n_features=2, model="linear", hidden=[])
    model = build_model(cfg)
    sharded = ShardedTraining(model, 10, 4, torch.device("cpu"))
    assert sharded.world == distributed.SINGLE and sharded.is_main and sharded.forward == model.head
    perm = torch.randperm(10)
    assert sharded.rows_of(None) is None and sharded.rows_of(perm) is perm
    assert [s[:2] for s in sharded.steps] == [(0, 4), (4, 8), (8, 10)]
    assert sharded.evaluate(lambda m, x, y: float(len(x)), model, torch.zeros(7, 2), torch.zeros(7)) == 7.0
    assert sharded.agree(True) is True and sharded.agree(False) is False


def test_process_group_outside_a_launcher_is_a_single_process() -> None:
    with distributed.process_group("auto", "cpu", env={}) as world:
        assert world == distributed.SINGLE
        assert not torch.distributed.is_initialized()


# ------------------------------------------- loading splits at scale (stages/dataset.read_split)
# (here because the scale work of this issue changed the loader; they belong with dataset.py)


@pytest.mark.parametrize("kind", ["friedman", "classification"])
def test_read_split_gives_what_the_dataframe_route_gives(tmp_path: Path, kind: str) -> None:
    meta = generate(DataParams(kind=kind, n_samples=3000, chunk_rows=1000, noise=0.1), tmp_path)  # 3 row groups
    for name in ("train", "val", "test"):
        got, want = read_split(name, meta, tmp_path), frame_to_split(read_split_frame(name, tmp_path), meta)
        assert got.x.dtype == want.x.dtype == np.float32 and got.y.dtype == want.y.dtype
        assert np.array_equal(got.x, want.x) and np.array_equal(got.y, want.y)
    shuffled = replace(meta, feature_names=meta.feature_names[::-1])  # meta's column order, not the file's
    assert np.array_equal(read_split("val", shuffled, tmp_path).x, read_split("val", meta, tmp_path).x[:, ::-1])
    assert list(load_splits(tmp_path, meta, names=("val",))) == ["val"]


def test_read_split_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    meta = Meta(task="classification", feature_names=["a", "b"], target="label", classes=[0, 1])
    with pytest.raises(DataError, match=r"train\.parquet: file not found"):
        read_split("train", meta, tmp_path)
    pd.DataFrame({"a": [1.0, 2.0], "label": [0, 1]}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"train\.parquet: missing column\(s\) b"):
        read_split("train", meta, tmp_path)
    pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 0.1], "label": pd.array([0, None], dtype="Int64")}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match="1 missing class labels in column 'label'"):
        read_split("train", meta, tmp_path)
    pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "label": [0, 1]}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match="non-numeric values"):
        read_split("train", meta, tmp_path)
    (tmp_path / "train.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"train\.parquet: cannot read parquet"):
        read_split("train", meta, tmp_path)


# --------------------------------------------------------------------------- real gloo runs


def _workdir(tmp: Path, train: dict, data: dict | None = None) -> Path:
    """A folder with params.yaml and generated data/, ready for `python -m stages.train`."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = {"kind": "friedman", "n_samples": 600, "seed": 7, **(data or {})}
    (tmp / "params.yaml").write_text(yaml.safe_dump({"data": data, "train": train}))
    generate(DataParams(**data), tmp / "data")
    return tmp


def _env(**extra: str) -> dict[str, str]:
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT)  # this checkout's stages/, whatever the install points at
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared 2-core machine
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _reference(work: Path, train: dict) -> tuple[dict, torch.nn.Module]:
    """The same training in this process (no process group: the single-process loop)."""
    meta = load_meta(work / "data")
    r = train_model(TrainParams(**train), load_splits(work / "data", meta), meta)
    return r.metrics, r.model


def _assert_matches(work: Path, train: dict, rtol: float) -> dict:
    got = json.loads((work / "metrics" / "train.json").read_text())
    ref, ref_model = _reference(work, train)
    assert got["world_size"] == 2 and ref["world_size"] == 1
    assert (got["epochs_run"], got["best_epoch"], got["stopped_early"]) == (ref["epochs_run"], ref["best_epoch"], ref["stopped_early"])
    for key in ("train_loss", "val_loss", "best_val_loss"):
        assert got[key] == pytest.approx(ref[key], rel=rtol), key
    model, _ = load_model(work / "models" / "model.pt")
    for (name, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=10 * rtol, atol=10 * rtol, msg=name)
    return got


GD = {"model": "mlp", "hidden": [16], "optimizer": "gd", "lr": 0.1, "epochs": 20, "regularizer": "l2",
      "reg_strength": 0.01, "early_stopping": {"patience": None}, "device": "cpu"}


def test_torchrun_full_batch_gd_matches_one_process(tmp_path: Path) -> None:
    work = _workdir(tmp_path / "run", GD)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    _run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "stages.train"], work)
    _assert_matches(work, GD, GD_RTOL)


ADAM = {"model": "mlp", "hidden": [16], "optimizer": "adam", "lr": 0.01, "batch_size": 53, "epochs": 40,
        "regularizer": "elastic_net", "reg_strength": 0.001, "early_stopping": {"patience": 3, "min_delta": 0.01},
        "checkpoint_every": 5, "device": "cpu", "distributed": {"enabled": True, "nproc": 2}}


@pytest.mark.slow
def test_params_launch_minibatch_adam_matches_one_process_and_stops_together(tmp_path: Path) -> None:
    """`train.distributed.enabled` relaunches the stage as 2 workers; odd global batches (53
    rows cut 26/27, the last 49 rows 24/25) need the loss scaling to give the global batch's
    gradient, and early stopping fires at the same epoch as in one process."""
    work = _workdir(tmp_path / "run", ADAM)
    _run([sys.executable, "-m", "stages.train"], work)
    got = _assert_matches(work, ADAM, ADAM_RTOL)
    assert got["stopped_early"] and got["epochs_run"] < ADAM["epochs"]
    assert not (work / "checkpoints" / "checkpoint.pt").exists()  # rank 0 cleared it after the outputs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_only_rank_zero_writes_files(tmp_path: Path) -> None:
    """Two ranks started by hand (the env:// rendezvous torchrun uses), each in its own folder:
    rank 1 trains its shard, checkpoints every epoch on rank 0, and writes nothing."""
    train = {**ADAM, "epochs": 4, "checkpoint_every": 1, "early_stopping": {"patience": None}, "distributed": {"enabled": False}}
    dirs = [_workdir(tmp_path / f"rank{r}", train) for r in range(2)]
    before = sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("*"))
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r)))
             for r, d in enumerate(dirs)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("*")) == before
    for out in ("models/model.pt", "metrics/train.json", "metrics/train_history.csv", "dvclive/metrics.json"):
        assert (dirs[0] / out).exists(), out
    assert json.loads((dirs[0] / "metrics" / "train.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_failing_worker_fails_the_launch_in_one_line(tmp_path: Path) -> None:
    work = _workdir(tmp_path / "run", {**ADAM, "epochs": 2})
    (work / "data" / "val.parquet").unlink()
    proc = _run([sys.executable, "-m", "stages.train"], work, check=False)
    assert proc.returncode == 1
    assert "fitline train: error: data/val.parquet: file not found" in proc.stderr  # the worker's own message
    assert "fitline train: error: 2 of 2 workers failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "models").exists()

