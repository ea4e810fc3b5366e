"""Has any of an index's open files been written to? One system call a question instead of one
`fstat` a file (Linux inotify; elsewhere the caller checks every file, as before).

`Index.damage` runs before every question. At a million passages an index keeps ~23 files
memory-mapped, and an `fstat` of each cost ~57 µs a question (benchmarks/README.md, "Where the
extra time goes"). The kernel reports a write, a truncation or a change of a file's times to an
inotify descriptor as part of the system call that makes it, so a non-blocking read of that
descriptor, finding nothing, says that no watched file changed since the last check: the full
check (every file's size and modification time against the verified ones) then runs only after
something happened. Writes through another process's shared memory mapping of an index file are
not reported (nor, until the kernel writes them back, do they change the modification time the
full check compares).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from collections.abc import Iterable

from qa.index.verify import close_files

__all__ = ["FileWatch", "watch_files"]

log = logging.getLogger(__name__)

IN_MODIFY, IN_ATTRIB = 0x2, 0x4  # a write or truncation; times, links or permissions changed
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
READ_SIZE = 65536  # events are 16 bytes plus a name (none for a watched file): thousands a read


class FileWatch:
    """The files watched by one inotify descriptor, and whether they are known unchanged.

    `quiet` is True once a full check (the caller's) found every file as verified and no event
    has come since. The lock makes "read the events, check the files, mark quiet" one step, so a
    question running beside a check never takes "no event left" for "no change".
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.quiet = False  # the first question checks every file (what changed before the watch)

    def pending(self) -> bool:
        """Reads the events that came since the last read; True if there were any (always True
        in a process forked after the watch was made: it shares the queue with its parent, and
        whichever reads an event takes it from the other)."""
        return os.getpid() != self.pid or self._read()

    def drain(self) -> None:
        """Discard every queued event (before a full check, which sees what they reported)."""
        if os.getpid() == self.pid:
            while self._read():
                pass

    def _read(self) -> bool:
        try:
            return bool(os.read(self.fd, READ_SIZE))
        except BlockingIOError:
            return False

    def close(self) -> None:
        close_files([self.fd])


@functools.cache
def _libc():
    """The C library's inotify functions, looked up once: among the symbols the process has
    loaded already (no search for the library file on every index load)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 (present in glibc and musl)
    except (OSError, AttributeError):
        return None
    return libc


def watch_files(fds: Iterable[int]) -> FileWatch | None:
    """A watch on the files open as `fds` (their inodes, whatever their paths are now), or None
    where inotify is not there (another system, the per-user limit of instances or watches
    reached): the caller then checks every file each time."""
    fds = list(fds)
    libc = _libc() if fds else None
    if libc is None:
        return None
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        log.debug("inotify unavailable (%s): index files are checked with fstat", os.strerror(ctypes.get_errno()))
        return None
    watch = FileWatch(fd)
    for opened in fds:
        # /proc/self/fd/N names the open file itself: the inode that is mapped, even if its path
        # has since been renamed over or removed.
        if libc.inotify_add_watch(fd, f"/proc/self/fd/{opened}".encode(), IN_MODIFY | IN_ATTRIB) < 0:
            log.debug("inotify watch failed (%s): index files are checked with fstat", os.strerror(ctypes.get_errno()))
            watch.close()
            return None
    return watch
