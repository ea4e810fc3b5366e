"""Locks between processes (qa.locks), as the model cache (qa.embed.cache.cache_lock) and the
index build (qa.index.format.build_lock) hold them: real processes hold real flock locks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qa.embed.cache import LOCK_FILE, cache_lock
from qa.errors import ModelError, QAError
from qa.index.format import build_lock

# Holds an exclusive flock on argv[1] until a line arrives on stdin (or it is killed).
_HOLDER = """
import fcntl, sys
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def _hold(path: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=30) == 0


def test_a_held_cache_lock_makes_others_wait_then_names_the_lock_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="qa.embed.cache")
    models = tmp_path / "models"
    models.mkdir()
    holder = _hold(models / LOCK_FILE)
    try:
        with pytest.raises(ModelError) as caught, cache_lock(models, wait_s=0.3):
            pytest.fail("the lock was taken while another process held it")
        assert str(models / LOCK_FILE) in str(caught.value) and "Wait for it" in str(caught.value)

        events: list[str] = []

        def waiter() -> None:
            with cache_lock(models, wait_s=60):
                events.append("waiter has it")

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and events == []  # waiting, not failing, not taking it
        events.append("holder releases")
        _release(holder)
        thread.join(30)
        assert events == ["holder releases", "waiter has it"]
        said = [r.getMessage() for r in caplog.records if r.name == "qa.embed.cache"]
        assert len(said) == 2 and all(str(models / LOCK_FILE) in line for line in said)  # one per wait
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    holder = _hold(models / LOCK_FILE)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (models / LOCK_FILE).exists()  # left behind, without a holder
    with cache_lock(models, wait_s=0):  # taken at once: its flock went with the process
        pass


def test_the_lock_is_reentrant_in_its_thread_and_excludes_other_threads(tmp_path):
    models = tmp_path / "models"
    other: list[BaseException | None] = []

    def try_it() -> None:
        try:
            with cache_lock(models, wait_s=0):
                other.append(None)
        except ModelError as exc:
            other.append(exc)

    with cache_lock(models, wait_s=0), cache_lock(models, wait_s=0):  # nested: no wait for itself
        thread = threading.Thread(target=try_it)
        thread.start()
        thread.join(30)
    assert isinstance(other[0], ModelError)
    try_it()
    assert other[1] is None  # released by the outer block


def test_a_second_index_build_still_fails_at_once(tmp_path):
    holder = _hold(tmp_path / ".lock")
    try:
        with pytest.raises(QAError, match="already building"), build_lock(tmp_path):
            pytest.fail("a second build ran")
    finally:
        _release(holder)
    with build_lock(tmp_path):
        pass
