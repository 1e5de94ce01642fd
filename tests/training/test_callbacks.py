"""The epoch callbacks: which are built, in what order, and the dvclive replay of a resumed run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dvclive import Live
from stages.training.callbacks import LiveLog, ProgressBar, close_callbacks, epoch_callbacks
from tests.conftest import subprocess_env


def _rec(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "lr": 0.1, "epoch_seconds": 0.5}


def _live(folder: Path) -> Live:
    return Live(dir=str(folder), save_dvc_exp=False, dvcyaml=False)


def _live_files(folder: Path) -> dict[str, object]:
    """dvclive's summary and each plot file's lines."""
    files: dict[str, object] = {"metrics.json": json.loads((folder / "metrics.json").read_text())}
    for tsv in sorted((folder / "plots/metrics").glob("*.tsv")):
        files[tsv.name] = tsv.read_text().splitlines()
    return files


def test_only_what_was_asked_for_in_a_fixed_order(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert epoch_callbacks(None, None, None, 5, 0, []) == []
    hook = print
    with _live(tmp_path / "live") as live:
        callbacks = epoch_callbacks(live, "bar", hook, 5, 0, [])
        assert [type(c) for c in callbacks[:2]] == [LiveLog, ProgressBar] and callbacks[2] is hook
        close_callbacks(callbacks)


def test_a_resumed_run_replays_its_epochs_to_dvclive_and_starts_its_bar_there(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with _live(tmp_path / "live") as live:
        live_log, bar = epoch_callbacks(live, "bar", None, 5, 2, [_rec(1), _rec(2)])
        assert live.step == 2
        assert bar.bar.n == 2
        live_log(_rec(3))
        bar(_rec(3))
        close_callbacks([live_log, bar])
    assert "3/5" in capsys.readouterr().err
    rows = _live_files(tmp_path / "live")["val_loss.tsv"]
    assert rows == ["step\tval_loss", "0\t2.0", "1\t1.0", f"2\t{2.0 / 3}"]


def test_dvclive_files_are_the_same_whether_it_syncs_every_epoch_or_now_and_then(tmp_path, monkeypatch) -> None:
    """Syncing dvclive every epoch re-read every plot file each time (for Studio, even when it is
    off): a small table's run paid about as much for it as for training. The files at the end
    do not depend on how often it syncs (every_seconds 0 is the old every-epoch sync)."""
    monkeypatch.chdir(tmp_path)
    now = [0.0]
    for name, every in (("each", 0.0), ("never", float("inf")), ("some", 3.0)):
        with _live(tmp_path / name) as live:
            log = LiveLog(live, every_seconds=every, clock=lambda: now[0])
            for epoch in range(1, 12):
                now[0] += 1.0
                log(_rec(epoch))
    each = _live_files(tmp_path / "each")
    assert each["metrics.json"]["step"] == 10 and len(each["train_loss.tsv"]) == 12
    assert _live_files(tmp_path / "never") == each
    assert _live_files(tmp_path / "some") == each


def test_progress_log_every_tenth_of_the_run_or_ten_seconds(caplog):
    """Off a terminal a 54k-row run printed nothing for 3 minutes (the bar needs a tty)."""
    from stages.training.callbacks import ProgressLog

    now = [0.0]
    progress = ProgressLog(total=100, initial=0, rows=5000, clock=lambda: now[0])
    logged = []
    with caplog.at_level("INFO", logger="stages.training.callbacks"):
        for epoch in range(1, 101):
            now[0] += 0.5 if epoch <= 50 else 3.0  # slow down halfway: the time rule takes over
            progress({"epoch": epoch, "train_loss": 1.0, "val_loss": 2.0})
            if caplog.records:
                logged.append(epoch)
                caplog.clear()
    assert logged[:5] == [10, 20, 30, 40, 50]  # every 10% while an epoch takes 0.5 s
    assert logged[5:] == [54, 58, 62, 66, 70, 74, 78, 82, 86, 90, 94, 98, 100]  # then every 10 s, and the end


def test_progress_log_line_has_losses_speed_and_time_left(caplog):
    from stages.training.callbacks import ProgressLog

    now = [100.0]
    progress = ProgressLog(total=40, initial=0, rows=1000, clock=lambda: now[0])
    now[0] += 8.0  # 4 epochs in 8 s: 2 s an epoch, 500 samples/s, 36 epochs (72 s) at most left
    with caplog.at_level("INFO", logger="stages.training.callbacks"):
        progress({"epoch": 4, "train_loss": 0.5, "val_loss": 0.75})
    assert caplog.messages == ["epoch 4/40: train loss 0.5, val loss 0.75, 500 samples/s, at most 72 s left"]


def test_the_train_stage_logs_progress_off_a_terminal(tmp_path):
    from tests.training.test_train import _stage_dir

    work = _stage_dir(tmp_path, epochs=20)
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=work, env=subprocess_env(),
                          capture_output=True, text=True, check=True)
    lines = [x for x in proc.stderr.splitlines() if "samples/s" in x]
    assert len(lines) >= 2 and "epoch 2/20: train loss" in lines[0]
