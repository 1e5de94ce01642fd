"""The checkpointer on its own: when it saves, and what a restore puts back (the loop's resume
tests, killed and rerun, are in test_train.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from stages.training.checkpoint import Checkpointer, RunState
from stages.training.early_stopping import EarlyStopping


def _parts(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict[str, torch.Generator]]:
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(float(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()  # some optimizer state worth saving
    return model, optimizer, {"cpu": torch.Generator().manual_seed(seed)}


def _checkpointer(path: Path | None, seed: int, fingerprint: str = "run", **kw) -> Checkpointer:
    model, optimizer, gens = _parts(seed)
    return Checkpointer(path, fingerprint, 2, model=model, optimizer=optimizer, gens=gens,
                        device=torch.device("cpu"), **kw)


def _state(epochs: int) -> RunState:
    state = RunState(EarlyStopping(patience=3))
    for e in range(1, epochs + 1):
        state.end_epoch({"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0 / e, "lr": 0.1, "epoch_seconds": 0.5})
    return state


def test_saves_every_nth_epoch_but_the_last_and_only_when_writing(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    ck = _checkpointer(path, 1)
    ck.maybe_save(_state(1), last=False)
    assert not path.exists()  # not a multiple of every=2
    ck.maybe_save(_state(2), last=True)
    assert not path.exists()  # the last epoch: nothing left to resume
    _checkpointer(path, 1, writes=False).maybe_save(_state(2), last=False)
    assert not path.exists()  # another rank than rank 0
    ck.maybe_save(_state(2), last=False)
    assert path.exists()


def test_without_a_path_nothing_is_saved_or_restored(tmp_path: Path) -> None:
    ck = _checkpointer(None, 1)
    ck.maybe_save(_state(2), last=False)
    assert list(tmp_path.iterdir()) == []
    assert not ck.restore(RunState(EarlyStopping(patience=3)))


def test_restore_puts_back_weights_optimizer_rng_and_state(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    saved, state = _checkpointer(path, 1), _state(4)
    state.early_stopping.update(5, 0.1, saved.model)
    saved.gens["cpu"].manual_seed(123)
    saved.maybe_save(state, last=False)

    fresh = _checkpointer(path, 2)
    back = RunState(EarlyStopping(patience=3))
    assert fresh.restore(back)
    assert torch.equal(fresh.model.weight, saved.model.weight)
    assert str(fresh.optimizer.state_dict()) == str(saved.optimizer.state_dict())
    assert torch.equal(fresh.gens["cpu"].get_state(), saved.gens["cpu"].get_state())
    assert (back.epoch, back.elapsed, back.history) == (state.epoch, state.elapsed, state.history)
    es, back_es = state.early_stopping, back.early_stopping
    assert (back_es.best_loss, back_es.best_epoch, back_es.bad_epochs) == (es.best_loss, 5, 0)
    assert all(torch.equal(back_es.best_state[k], v) for k, v in es.best_state.items())


def test_another_runs_or_a_torn_checkpoint_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    _checkpointer(path, 1).maybe_save(_state(2), last=False)
    other = _checkpointer(path, 2, fingerprint="other run")
    before = other.model.weight.clone()
    assert not other.restore(RunState(EarlyStopping(patience=3)))
    assert torch.equal(other.model.weight, before)
    path.write_bytes(b"torn")
    assert not _checkpointer(path, 1).restore(RunState(EarlyStopping(patience=3)))
