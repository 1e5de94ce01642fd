"""The epoch callbacks: which are built, in what order, and the dvclive replay of a resumed run."""

from __future__ import annotations

from stages.training.callbacks import LiveLog, ProgressBar, close_callbacks, epoch_callbacks


class FakeLive:
    def __init__(self) -> None:
        self.steps: list[dict] = [{}]

    def log_metric(self, key: str, value: float) -> None:
        self.steps[-1][key] = value

    def next_step(self) -> None:
        self.steps.append({})


def _rec(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": 2.0, "lr": 0.1, "epoch_seconds": 0.5}


def test_only_what_was_asked_for_in_a_fixed_order() -> None:
    assert epoch_callbacks(None, False, None, 5, 0, []) == []
    hook = print
    callbacks = epoch_callbacks(FakeLive(), True, hook, 5, 0, [])
    assert [type(c) for c in callbacks[:2]] == [LiveLog, ProgressBar] and callbacks[2] is hook
    close_callbacks(callbacks)


def test_a_resumed_run_replays_its_epochs_to_dvclive_and_starts_its_bar_there(capsys) -> None:
    live = FakeLive()
    live_log, bar = epoch_callbacks(live, True, None, 5, 2, [_rec(1), _rec(2)])
    assert len(live.steps) == 3 and live.steps[0] == {k: v for k, v in _rec(1).items() if k != "epoch"}
    assert bar.bar.n == 2
    live_log(_rec(3))
    bar(_rec(3))
    close_callbacks([live_log, bar])
    assert len(live.steps) == 4 and "3/5" in capsys.readouterr().err
