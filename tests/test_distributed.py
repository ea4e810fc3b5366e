"""`qa index --ray`: the embedding spread over Ray workers, the index the normal one."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from qa.cli import main
from qa.distributed import RayEmbedder, build_index_on_ray, shard
from qa.errors import ModelError, QAError
from tests.conftest import ROOT
from tests.fakes import FakeEmbedder


@pytest.mark.parametrize(
    "n,parts,max_size", [(0, 2, 8), (1, 4, 8), (10, 3, 100), (85, 2, 128), (1000, 2, 128)]
)
def test_shards_are_contiguous_balanced_and_bounded(n, parts, max_size):
    pieces = shard(n, parts, max_size)
    assert [i for a, b in pieces for i in range(a, b)] == list(range(n))  # all, once, in order
    assert all(0 < b - a <= max_size for a, b in pieces)
    if n and n <= parts * max_size:
        assert len(pieces) <= parts  # small calls still give every worker a share, no more


def test_without_ray_the_error_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(QAError, match=r"pip install 'qa\[distributed\]'"):
        build_index_on_ray(ROOT / "corpus", settings=None)
    assert main(["index", str(ROOT / "corpus"), "--ray"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "qa[distributed]" in err


def test_an_unreachable_cluster_is_one_line_naming_the_address(monkeypatch):
    def refuse(**kwargs):
        raise ConnectionError("ray client connection timeout")

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=refuse)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(QAError, match="ray://head:10001.*connection timeout") as caught:
        build_index_on_ray(ROOT / "corpus", settings=None, address="ray://head:10001")
    assert "\n" not in str(caught.value)


def test_a_corpus_folder_after_ray_is_not_taken_for_an_address(capsys):
    assert main(["index", "--ray", str(ROOT / "corpus")]) == 1
    assert "is a folder, not a Ray address" in capsys.readouterr().err


def test_a_worker_with_another_model_is_refused():
    embedder = object.__new__(RayEmbedder)  # only the check, no cluster
    embedder.local = FakeEmbedder("fake:1")
    embedder._check_models([{"name": "fake", "fingerprint": "fake:1", "dim": 16, "node": "10.0.0.6"}])
    with pytest.raises(ModelError, match="10.0.0.7.*must not mix models"):
        embedder._check_models([{"name": "fake", "fingerprint": "fake:2", "dim": 16, "node": "10.0.0.7"}])


def test_worker_failures_are_one_line():
    exceptions = pytest.importorskip("ray").exceptions

    def failing(error):
        def get(refs, timeout=None):
            raise error

        embedder = object.__new__(RayEmbedder)  # only the error mapping, no cluster
        embedder._ray, embedder.actors = types.SimpleNamespace(get=get, exceptions=exceptions), []
        return embedder

    essay = "Task was killed due to the node running low on memory.\nRefer to ... the out of memory issue ..."
    with pytest.raises(QAError, match="lack of memory.*fewer workers") as caught:
        failing(exceptions.OutOfMemoryError(essay))._gather([])
    assert "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="^cannot load$"):  # a worker's own error, as it was raised
        failing(exceptions.RayTaskError("describe", "Traceback...", ModelError("cannot load")))._gather([])


@pytest.fixture(scope="module")
def ray_index(tmp_path_factory):
    """The seed corpus indexed by `qa index --ray` on a new local Ray, 2 workers of 1 CPU."""
    pytest.importorskip("ray")
    from qa.config import Settings

    index_dir = tmp_path_factory.mktemp("ray") / "index"
    argv = ["--index-dir", str(index_dir), "index", str(ROOT / "corpus"), "--ray", "--ray-workers", "2", "-q"]
    assert main(argv) == 0
    return Settings(corpus_dir=ROOT / "corpus", index_dir=index_dir)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.slow
def test_ray_build_is_the_local_build(ray_index, seed_settings):
    import ray

    from qa.index.load import open_index

    assert not ray.is_initialized()  # the CLI shut down the Ray it started
    built, local = open_index(ray_index.index_dir), open_index(seed_settings.index_dir)
    assert built.manifest.model == local.manifest.model
    assert [(c.doc_id, c.start, c.end) for c in built.chunks] == [
        (c.doc_id, c.start, c.end) for c in local.chunks
    ]
    cosines = (_unit(built.passage_vectors) * _unit(local.passage_vectors)).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines.min()  # same passages, same order, same model and prompts
    assert np.array_equal(built.sentences, local.sentences)
    cosines = (_unit(built.sentence_vectors) * _unit(local.sentence_vectors)).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines.min()


@pytest.mark.slow
def test_ray_index_answers_a_seed_question(ray_index, seed_facts):
    from qa import retrieve

    fact = next(f for f in seed_facts if f["id"] == "shear")
    passages = retrieve(fact["questions"]["es"], k=3, settings=ray_index)
    texts = [t for p in passages for t in [p.text, *(x.text for x in p.translations)]]
    assert any(e in t for t in texts for e in fact["evidence"]), [p.text[:80] for p in passages]


@pytest.fixture
def stale_head():
    """A Ray head left running on this machine by an earlier `ray start` (its own temp folder), and
    its address in RAY_ADDRESS, as a shell that ran it might still have. Stopped after. (Ray puts
    it on the machine's own address: it replaces 127.0.0.1 given to `ray start` or `ray.init`.)"""
    pytest.importorskip("ray")
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-stale-", dir="/tmp")  # short: Ray's socket paths are limited
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}",
         f"--temp-dir={temp}", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None and time.monotonic() < deadline, "the stale Ray head did not start"
            time.sleep(0.5)
        old = os.environ.get("RAY_ADDRESS")
        os.environ["RAY_ADDRESS"] = address
        yield address
    finally:
        os.environ.pop("RAY_ADDRESS", None) if old is None else os.environ.__setitem__("RAY_ADDRESS", old)
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _gcs_address(ray) -> str:
    return ray.get_runtime_context().gcs_address


def _port(address: str) -> str:
    return address.rsplit(":", 1)[1]


@pytest.mark.slow
def test_a_local_ray_is_new_and_ignores_a_cluster_left_on_the_machine(stale_head):
    import ray

    from qa.distributed import _connect

    assert _connect(ray, None)
    try:
        assert _port(_gcs_address(ray)) != _port(stale_head)  # not joined: a Ray of its own
        # One node, this machine's (Ray puts it on the machine's own address, never loopback).
        assert [node["NodeManagerAddress"] for node in ray.nodes()] == [_gcs_address(ray).rsplit(":", 1)[0]]
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_an_address_joins_that_cluster(stale_head):
    import ray

    from qa.distributed import _connect

    assert _connect(ray, stale_head)
    try:
        assert _port(_gcs_address(ray)) == _port(stale_head)
    finally:
        ray.shutdown()
