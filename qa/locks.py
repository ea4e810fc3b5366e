"""Exclusive locks between processes: `file_lock` holds an `flock` on a lock file.

An flock belongs to the open file, so it goes with the process that held it (killed or not): a
lock file left behind never blocks anyone, and is never deleted (deleting a lock file while
another process waits on it would let two holders in). The index build (`qa.index.format.build_lock`)
and the model cache (`qa.embed.cache.cache_lock`) use it.

Within a process the lock is reentrant for the thread that holds it (a conversion that calls
another one that locks the same file does not wait for itself); other threads wait as other
processes do. On a platform without `fcntl` only the threads of one process are serialized.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["file_lock"]

log = logging.getLogger(__name__)

_POLL_S = 0.05  # flock has no timeout: a bounded wait polls


class _Held:
    """This process's hold on one lock file: the threads' lock and, while held, the open file."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


def _open(path: Path) -> int | None:
    """The lock file, opened (created when missing); None where it can be neither created nor
    read (a read-only folder, whose readers need no lock: nobody can write there)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        pass
    try:
        return os.open(path, os.O_RDONLY)  # flock works on a file opened for reading
    except OSError as exc:
        log.debug("cannot open the lock file %s (%s): not locking", path, exc)
        return None


def _try_flock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: the threads' lock alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True  # a file system without flock: the atomic renames alone keep readers safe
    return True


@contextlib.contextmanager
def file_lock(
    path: Path,
    *,
    wait_s: float,
    busy: Callable[[Path], Exception],
    waiting: Callable[[Path], None] | None = None,
) -> Iterator[None]:
    """Hold the exclusive lock `path` (created when missing) for the `with` block.

    Waits up to `wait_s` seconds for another holder (0: not at all), then raises `busy(path)`;
    `waiting(path)` is called once when another process holds it (to say why nothing happens).
    """
    path = Path(path)
    with _held_guard:
        held = _held.setdefault(os.path.abspath(path), _Held())
    deadline = time.monotonic() + wait_s
    if not (held.thread_lock.acquire(timeout=wait_s) if wait_s > 0 else held.thread_lock.acquire(blocking=False)):
        raise busy(path)
    try:
        if held.depth == 0:
            fd = _open(path)
            told = False
            while fd is not None and not _try_flock(fd):
                if not told and waiting is not None and wait_s > 0:
                    waiting(path)
                    told = True
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise busy(path)
                time.sleep(_POLL_S)
            held.fd = fd
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                os.close(held.fd)  # releases the flock
                held.fd = None
    finally:
        held.thread_lock.release()
