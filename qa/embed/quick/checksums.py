"""Damage caught before a question is embedded: the checksums of the files the quick path reads,
checked only where a file's stamp changed, and the compiled models OpenVINO caches for it, used
only once recorded (and shared with the full path's identical ones as hard links)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import zlib
from pathlib import Path

from qa.embed.quick.format import _ARRAYS, _COMPILED, _META, _OPENVINO_FILES, _STAMPS, _VOCAB

__all__ = ["DamagedBundleError", "share_compiled"]

log = logging.getLogger(__name__)


class DamagedBundleError(Exception):
    """A file the quick path reads (`path`) does not match its recorded checksum, or is missing."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def _stamp(path: Path) -> list[int]:
    """What changes when a file is written, replaced or copied (as `verified.json` of an index)."""
    info = path.stat()
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _depends_on(folder: Path, meta: dict) -> dict[str, Path]:
    """The files the quick path reads, by the name the manifest records their checksums under."""
    files = {name: folder / name for name in (_VOCAB, *(f"{a}.npy" for a in _ARRAYS))}
    xml = Path(meta["openvino_model"])
    files.update({f"openvino/{name}": xml.with_name(name) for name in _OPENVINO_FILES})
    return files


def _meta_checksum(meta: dict) -> str:
    body = {key: value for key, value in meta.items() if key != "meta_checksum"}
    return f"crc32:{zlib.crc32(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()):08x}"


def _sealed(meta: dict) -> dict:
    """`meta` with the checksum of its own content, checked by `find_quick`."""
    return {**meta, "meta_checksum": _meta_checksum(meta)}


def _record_checksums(folder: Path, meta: dict) -> None:
    """Put the checksums of the files the path reads into `meta`, their stamps into `folder`."""
    from qa.index.verify import file_checksum

    files = _depends_on(folder, meta)
    meta["checksums"] = {key: file_checksum(path) for key, path in files.items()}
    stamps = {key: _stamp(path) for key, path in files.items()}
    (folder / _STAMPS).write_text(json.dumps({"stamps": stamps, "compiled": {}}), encoding="utf-8")


def _read_verified(folder: Path) -> dict:
    """`verified.json`: {"stamps": {name: stamp}, "compiled": {file: checksum}}; empty when it is
    missing or unreadable (then every file is hashed, and no compiled model is trusted)."""
    try:
        verified = json.loads((folder / _STAMPS).read_bytes())
        if isinstance(verified.get("stamps"), dict) and isinstance(verified.get("compiled"), dict):
            return verified
    except (OSError, ValueError, AttributeError):
        pass
    return {"stamps": {}, "compiled": {}}


def _write_verified(folder: Path, verified: dict) -> None:
    # Best effort: a read-only cache is hashed again at the next load instead.
    tmp = folder / f".{_STAMPS}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(verified), encoding="utf-8")
        os.replace(tmp, folder / _STAMPS)
    except OSError as exc:
        log.debug("could not record %s in %s: %s", _STAMPS, folder, exc)
        tmp.unlink(missing_ok=True)


def _hashed_if_changed(path: Path, expected: str, stamp: list[int] | None) -> list[int] | None:
    """None when `path` still has `stamp`; else its new stamp once its content checksum is
    `expected`. DamagedBundleError when it is missing or its content differs."""
    from qa.index.verify import file_checksum

    try:
        before = _stamp(path)
        if before == stamp:
            return None
        actual = file_checksum(path)
    except OSError:
        raise DamagedBundleError(f"{path} is missing", path) from None
    if actual != expected:
        raise DamagedBundleError(f"{path} is damaged (checksum {actual}, recorded {expected})", path)
    return before


def _verify_files(folder: Path, meta: dict) -> None:
    """Check every file the quick path reads against the manifest's checksums, hashing only
    those whose stamp changed; DamagedBundleError naming the first that does not match."""
    verified = _read_verified(folder)
    checksums = meta.get("checksums")
    if not isinstance(checksums, dict):
        raise DamagedBundleError(f"{folder / _META} records no checksums")
    changed = {}
    for key, path in _depends_on(folder, meta).items():
        if key not in checksums:
            raise DamagedBundleError(f"{folder / _META} records no checksum for {key}")
        stamp = _hashed_if_changed(path, checksums[key], verified["stamps"].get(key))
        if stamp is not None:
            changed[key] = stamp
    if changed:
        from qa.embed.cache import cache_lock

        # Read again under the lock: another process may have recorded a compiled model since.
        with cache_lock(folder.parent):
            verified = _read_verified(folder)
            verified["stamps"].update(changed)
            _write_verified(folder, verified)


def _discard(*folders: Path) -> None:
    """Move damaged folders out of the way, then delete them: the full path writes new ones."""
    for folder in folders:
        aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(folder, aside)
        except OSError as exc:
            log.debug("could not move %s aside: %s", folder, exc)
            continue
        shutil.rmtree(aside, ignore_errors=True)


def _trusted_compiled(folder: Path) -> dict:
    """Delete the compiled models of the bundle's OpenVINO cache that are not recorded or do
    not match their record, before OpenVINO reads one; returns `verified.json`."""
    verified = _read_verified(folder)
    compiled = folder / _COMPILED
    records = verified["compiled"]
    for blob in sorted(compiled.iterdir()) if compiled.is_dir() else []:
        record = records.get(blob.name)
        try:
            if record is None:
                raise DamagedBundleError(f"{blob} was never recorded")
            stamp = _hashed_if_changed(blob, record[0], record[1])
            if stamp is not None:
                record[1] = stamp
        except DamagedBundleError as exc:
            if record is not None:
                log.warning("The quick question path's compiled model %s; compiling it again.", exc)
            records.pop(blob.name, None)
            blob.unlink(missing_ok=True)
    for name in [name for name in records if not (compiled / name).is_file()]:
        # Removed by the full path's pruning (qa.embed.cache.prune_blobs): a compiled model of
        # that name written later is a new one, adopted or recorded as such.
        del records[name]
    return verified


def _record_compiled(folder: Path, verified: dict, shared: Path | None = None) -> None:
    """Record the checksum and stamp of each compiled model OpenVINO wrote since `_trusted_compiled`
    (hashed once, right after it was written: a few tenths of a second for a 0.5 GB model).

    The full path compiles the same OpenVINO copy with the same configuration into `shared`: a
    model found there with the same bytes takes the new one's place as a hard link (the cache
    then holds one copy of the 0.5 GB, not two)."""
    from qa.embed.cache import share_identical
    from qa.index.verify import file_checksum

    compiled = folder / _COMPILED
    records, new = verified["compiled"], False
    for blob in sorted(compiled.iterdir()) if compiled.is_dir() else []:
        if blob.name in records or not blob.is_file():
            continue
        try:
            checksum = file_checksum(blob)
            if shared is not None and (shared / blob.name).is_file():
                share_identical(blob, shared / blob.name, checksum=checksum)
            records[blob.name] = [checksum, _stamp(blob)]  # the link's stamp, where linked
            new = True
        except OSError:
            continue  # removed meanwhile by another process: it is compiled again later
    if new:
        _write_verified(folder, verified)


def _adopt_shared(folder: Path, verified: dict, shared: Path) -> None:
    """Link the full path's compiled models (same OpenVINO copy, same configuration, so the
    same cache key and file name) into the bundle's cache before OpenVINO looks there, and
    record them: OpenVINO then imports the one copy instead of compiling a second. Linking
    after compiling is not enough: two compiles of one model differ by a few bytes."""
    from qa.index.verify import file_checksum

    compiled, records, new = folder / _COMPILED, verified["compiled"], False
    for theirs in sorted(shared.glob("*.blob")) if shared.is_dir() else []:
        mine = compiled / theirs.name
        if theirs.name in records or mine.exists():
            continue
        tmp = compiled / f".{theirs.name}.tmp-{os.getpid()}"
        try:
            compiled.mkdir(parents=True, exist_ok=True)
            os.link(theirs, tmp)
            os.replace(tmp, mine)
            records[mine.name] = [file_checksum(mine), _stamp(mine)]  # hashed once, as a new compile
            new = True
        except OSError as exc:  # no hard links here, or removed meanwhile: OpenVINO compiles
            tmp.unlink(missing_ok=True)
            log.debug("could not link %s into %s: %s", theirs, compiled, exc)
    if new:
        _write_verified(folder, verified)


def share_compiled(folder: Path, shared: Path) -> None:
    """Make the compiled models recorded in the bundle `folder` hard links to the full path's
    identical ones in `shared`, where they are not yet (a bundle compiled before the full path
    compiled into `shared`, or written by an earlier version). The full path calls it: a few
    `stat` calls once linked; the link's stamp is recorded, so the next load hashes nothing."""
    from qa.embed.cache import share_identical

    verified = _read_verified(folder)
    changed = False
    for name, record in verified["compiled"].items():
        blob, theirs = folder / _COMPILED / name, shared / name
        try:
            if not theirs.is_file() or blob.stat().st_ino == theirs.stat().st_ino:
                continue
            # Against the recorded checksum: a damaged copy in the bundle is replaced by the good one.
            if share_identical(blob, theirs, checksum=record[0]):
                record[1] = _stamp(blob)
                changed = True
        except OSError:
            continue
    if changed:
        _write_verified(folder, verified)
