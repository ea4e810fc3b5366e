"""Is an index version the one its manifest describes? Sizes and content checksums of every
file at load, the files to be memory-mapped kept open as verified, so that `Index.damage` can tell
when one changes underneath a running server."""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qa.errors import IndexCorruptError
from qa.index.format import CHECKSUM, MANIFEST, READ_BLOCK, STAMPS, Manifest, atomic_write

__all__ = [
    "OpenFile",
    "check_files",
    "close_files",
    "file_checksum",
    "file_stamp",
    "map_npy",
    "read_stamps",
    "record_stamps",
    "write_stamps",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenFile:
    """A verified index file kept open while it is memory-mapped, and its size and modification
    time when it was verified (see `Index.damage`)."""

    path: Path
    fd: int
    size: int
    mtime_ns: int


def close_files(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def file_checksum(path: Path | str) -> str:
    """The content checksum the manifest records for a file: "crc32:<8 hex digits>".

    CRC-32 (zlib) was measured the fastest sound check of the standard library here (2.2-2.7
    GB/s; SHA-1 0.8x, SHA-256 0.6x, BLAKE2b 0.2x; Adler-32, sometimes faster, is weak on short
    and sparse changes: benchmarks/bench_integrity.py) and is made for what it guards against:
    truncation, zero-filled or garbled blocks, a file from another build. It is not a defence
    against someone forging an index file: whoever can write the index can write its manifest.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return _checksum_fd(fd)
    finally:
        os.close(fd)


def _checksum_fd(fd: int) -> str:
    # Read, not mapped: a file truncated while it is hashed gives a short read here, where
    # reading a mapping past the new end would kill the process with SIGBUS.
    # (Asking the kernel to read ahead, per block or for the whole file, or verifying two
    # files at once on two threads, measured no faster on 2 busy cores: not kept.)
    crc, offset, buffer = 0, 0, bytearray(READ_BLOCK)
    view = memoryview(buffer)
    while n := os.preadv(fd, [buffer], offset):
        crc = zlib.crc32(view[:n], crc)
        offset += n
    return f"{CHECKSUM}:{crc:08x}"


def check_files(
    version_dir: Path, manifest: Manifest, keep_open: frozenset[str] = frozenset()
) -> dict[str, OpenFile]:
    """Check every file the manifest lists: present, of its recorded size and content checksum.

    A file's checksum is computed once, not at every load: when it matches, the file's stamp
    (inode, size, modification and change times) is recorded in `verified.json` (the build
    records them as it writes the checksums), and a later load that finds the open file with
    the same stamp skips hashing it. Hashing every file at every load was 2.6 of the 2.75 s to
    ready at a million passages and would be ~25 s at ten million (benchmarks/README.md,
    section 16). Any write to a file, a copy (a new inode), a `touch`, even restoring the old
    modification time (the change time cannot be set) changes its stamp, so every change that
    goes through the file system is hashed again before a question reads the file. What the stamp
    cannot see is damage below the file system (a disk returning other bytes for the same blocks):
    deleting `verified.json` has every file hashed again at the next load. Without it (a copy
    that could not record it, being read-only), every file is hashed at every load, as before.

    Blocking: questions are never served from files not yet checked (verifying in the background
    would). The files named in `keep_open` (those to be memory-mapped) are returned open, so that
    what is mapped is the very file that was verified.

    An index written before checksums existed (same format otherwise) loads with the size
    checks only, and a warning: refusing it would make `qa index` re-embed everything (an
    incremental build reuses vectors only from an index it can load), while rebuilding it
    reuses every vector and adds the checksums.
    """
    # Sizes first: a missing or truncated file fails at once, not after seconds of hashing.
    for name, size in manifest.files.items():
        _check_size(version_dir / name, size)
    if not manifest.checksums:
        log.warning(
            "%s has no content checksums (written by an older qa): only file sizes are checked. "
            "Run `qa index` to add them (it reuses the existing vectors).", version_dir,
        )
    elif manifest.checksums.keys() != manifest.files.keys():
        raise IndexCorruptError(
            f"{version_dir / MANIFEST} lists checksums for other files than it lists sizes for. "
            "Rebuild the index with `qa index`."
        )
    stamps = read_stamps(version_dir)
    verified: dict[str, OpenFile] = {}
    hashed = 0
    try:
        for name, size in manifest.files.items():
            checksum = manifest.checksums.get(name)
            verified[name], was_hashed = _verify_file(version_dir / name, size, checksum, stamps.get(name))
            hashed += was_hashed
    except BaseException:
        close_files([kept.fd for kept in verified.values()])
        raise
    if hashed and manifest.checksums:
        record_stamps(version_dir, {name: file_stamp(os.fstat(kept.fd)) for name, kept in verified.items()})
    close_files([kept.fd for name, kept in verified.items() if name not in keep_open])
    return {name: kept for name, kept in verified.items() if name in keep_open}


def file_stamp(info: os.stat_result) -> list[int]:
    """A file's stamp from its `os.stat` result, as recorded in `verified.json`: what changes when a file is written, replaced or copied: inode, size, modification and
    change times (the change time moves on any write or metadata change and cannot be set back)."""
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def read_stamps(version_dir: Path) -> dict[str, list[int]]:
    """The stamps of `verified.json` by file name; empty when it is missing or unreadable (then
    every file is hashed: a damaged stamp file costs time, never a wrong answer)."""
    try:
        stamps = json.loads((version_dir / STAMPS).read_bytes())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def write_stamps(version_dir: Path, names: list[str]) -> None:
    """Record the stamps of `names` (files of `version_dir` whose checksums were just computed
    from their content: the build, as it writes the manifest)."""
    record_stamps(version_dir, {name: file_stamp(os.stat(version_dir / name)) for name in names})


def record_stamps(version_dir: Path, stamps: dict[str, list[int]]) -> None:
    """Write `stamps` (file name -> `file_stamp`) as the `verified.json` of `version_dir`,
    replacing it; returns nothing, and logs (never raises) when it cannot be written."""
    # Best effort: a read-only index (or a full disk) is hashed again at the next load instead.
    try:
        atomic_write(version_dir / STAMPS, lambda tmp: tmp.write_text(json.dumps(stamps)), durable=False)
    except OSError as exc:
        log.debug("could not record %s in %s: %s", STAMPS, version_dir, exc)


def _check_size(path: Path, size: int) -> None:
    try:
        actual = path.stat().st_size
    except OSError:
        actual = None
    if actual is None or not path.is_file():
        raise IndexCorruptError(f"{path} is missing. Rebuild the index with `qa index`.")
    if actual != size:
        raise IndexCorruptError(
            f"{path} has {actual} bytes but the manifest says {size}: the file is truncated or "
            "was changed. Rebuild the index with `qa index`."
        )


def _verify_file(path: Path, size: int, checksum: str | None, stamp: list[int] | None) -> tuple[OpenFile, bool]:
    """Open `path`, check its size and (when given) its checksum, unless the open file still has
    the `stamp` recorded when its checksum last matched; returns it open, and whether it was hashed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing. Rebuild the index with `qa index`.") from None
    try:
        before = os.fstat(fd)
        if before.st_size != size:
            _check_size(path, size)  # raises, naming the sizes (the file changed since the first pass)
        hashed = checksum is not None and file_stamp(before) != stamp
        if hashed:
            actual = _checksum_fd(fd)
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise IndexCorruptError(
                    f"{path} changed while it was being verified. Wait for whatever writes it to "
                    "finish, or rebuild the index with `qa index`."
                )
            if actual != checksum:
                raise IndexCorruptError(
                    f"{path} is damaged: its content checksum is {actual}, the manifest says "
                    f"{checksum}. Rebuild the index with `qa index`."
                )
        return OpenFile(path, fd, before.st_size, before.st_mtime_ns), hashed
    except BaseException:
        os.close(fd)
        raise


def map_npy(opened: OpenFile) -> np.ndarray:
    """The array of the open .npy file, memory-mapped read-only from that descriptor.

    A plain ndarray over the map (numpy's memmap subclass costs ~0.1 ms per indexing); the
    map holds its own duplicate of the descriptor.
    """
    import io

    header = io.BytesIO(os.pread(opened.fd, 1 << 16, 0))
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(header)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(header)
    if dtype.hasobject:
        raise ValueError("holds Python objects")
    mapping = mmap.mmap(opened.fd, 0, access=mmap.ACCESS_READ)
    return np.ndarray(shape, dtype, buffer=mapping, offset=header.tell(), order="F" if fortran_order else "C")

