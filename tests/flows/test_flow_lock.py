"""flows/workspace_lock.py: one flow run per workspace; the second waits or fails clearly."""

from __future__ import annotations

import os
import threading
import time

import pytest

from flows.workspace_lock import WorkspaceBusy, workspace_lock


def test_second_holder_gives_up_with_a_clear_message(tmp_path):
    with workspace_lock(tmp_path):
        start = time.monotonic()
        with pytest.raises(WorkspaceBusy, match=rf"pid {os.getpid()}\).*waiting 0.3 s"):
            with workspace_lock(tmp_path, timeout=0.3):
                pass
        assert time.monotonic() - start >= 0.3


def test_second_holder_waits_for_the_first(tmp_path):
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with workspace_lock(tmp_path):
            held.set()
            time.sleep(0.5)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with workspace_lock(tmp_path, timeout=10):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]


def test_lock_is_released_after_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with workspace_lock(tmp_path):
            raise RuntimeError("stage failed")
    with workspace_lock(tmp_path, timeout=0):
        pass
