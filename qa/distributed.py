"""Index building on a Ray cluster (`qa index --ray`): Ray actors embed, the driver writes.

The driver (the process running `qa index`) reads the corpus, chunks it and writes the index with
the normal `qa.index.build.build_index`; only the embedding, nearly all of a build's time, is spread over
Ray actors, each holding its own copy of the model. Texts go out, vectors come back, so the index
is the same one a local build writes and `qa.index.load.open_index` serves it as usual.

With a database (`--database`, QA_DATABASE_URL) the rows of the new store version are sent by Ray
tasks, each COPYing a part of the articles' rows over its own connection into the version's
tables (`qa.postgres.write.copy_part`); the driver then builds the version's indexes and switches
it live in one statement once every part is in, so servers still see one version or the other.

Needs the optional extra `qa[distributed]` (Ray), and `qa` with the same model on every node.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Self

import numpy as np

from qa.config import Settings
from qa.errors import ModelError, QAError

__all__ = ["RayEmbedder", "RayRowCopier", "build_index_on_ray", "shard"]

INSTALL_HINT = "pip install 'qa[distributed]'"
PIECE_BATCHES = 4  # batches of QA_BATCH_SIZE texts per task: big enough that a task's overhead is noise
COPIES_IN_FLIGHT = 2  # parts of rows queued per worker (each ~0.2 GB in Ray's object store)
READY_TIMEOUT = 600  # seconds for every worker to load its model (a first use converts it, ~1 min)
# What a worker takes from the driver's settings, when set there; the rest is the node's own
# (its default cache folder, its environment). Chunking and retrieval settings stay on the driver.
FORWARDED = {"model", "cache_dir", "device", "batch_size", "embed_backend"}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise QAError(f"`qa index --ray` needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def shard(n: int, parts: int, max_size: int) -> list[tuple[int, int]]:
    """Contiguous (start, end) ranges covering range(n): `parts` about equal ones, none over `max_size`."""
    if n <= 0:
        return []
    size = max(1, min(max_size, -(-n // max(parts, 1))))
    return [(start, min(start + size, n)) for start in range(0, n, size)]


class EmbedWorker:
    """A Ray actor (one process, its own model) embedding passages; made remote by RayEmbedder."""

    def __init__(self, settings: dict, threads: int):
        # Nothing loads here: an error raised in a Ray constructor comes back as a bare traceback,
        # one raised in a method comes back as itself (a ModelError with its message).
        self.settings = Settings(**settings, threads=threads)

    def describe(self) -> dict:
        """Load the model; what the index manifest would record about it, and where it runs."""
        import ray

        from qa.embed import get_embedder

        return {**get_embedder(self.settings).describe(), "node": ray.util.get_node_ip_address()}

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 passage embeddings, as `qa.embed.LocalEmbedder.encode_documents`."""
        from qa.embed import get_embedder

        return get_embedder(self.settings).encode_documents(texts)


class RayEmbedder:
    """An `qa.embed.Embedder` for `qa.index.build.build_index`, embedding passages on Ray.

    The driver keeps a local embedder for the cheap parts: counting tokens while chunking, the
    model description for the manifest, and the few question embeddings of the language
    statistics. Every worker must have the driver's model (same fingerprint).
    Use as a context manager, or call `close()`, to free the workers.
    """

    def __init__(self, settings: Settings, workers: int, cpus_per_worker: int = 1):
        from qa.embed import get_embedder

        self._ray = ray = _import_ray()
        self.local = get_embedder(settings)
        self.piece_size = PIECE_BATCHES * settings.batch_size
        # Read by qa.index.embedding's progress loop: one piece per worker per step of the progress bar.
        self.slice_size = self.piece_size * workers
        forwarded = settings.model_dump(include=FORWARDED, exclude_unset=True)
        remote = ray.remote(EmbedWorker).options(num_cpus=cpus_per_worker)
        self.actors = [remote.remote(forwarded, cpus_per_worker) for _ in range(workers)]
        try:
            self._check_models(self._gather([a.describe.remote() for a in self.actors], READY_TIMEOUT))
        except BaseException:
            self.close()
            raise

    def _check_models(self, described: list[dict]) -> None:
        expected = self.local.describe()
        for found in described:
            if (found["fingerprint"], found["dim"]) != (expected["fingerprint"], expected["dim"]):
                raise ModelError(
                    f"The Ray worker on {found['node']} has model {found['name']!r} (fingerprint "
                    f"{found['fingerprint']}, dimension {found['dim']}), but this machine has "
                    f"{expected['name']!r} (fingerprint {expected['fingerprint']}, dimension "
                    f"{expected['dim']}); an index must not mix models. Install the same qa and "
                    "model (and QA_MODEL) on every node."
                )

    def _gather(self, refs: list, timeout: float | None = None) -> list:
        return _gather(self._ray, refs, timeout, len(self.actors))

    @property
    def dim(self) -> int:
        return self.local.dim

    @property
    def max_tokens(self) -> int:
        return self.local.max_tokens

    @property
    def fingerprint(self) -> str:
        return self.local.fingerprint

    def encode_query(self, text: str) -> np.ndarray:
        """One question's vector, embedded on the driver (a question is not worth a round trip)."""
        return self.local.encode_query(text)

    def describe(self) -> dict:
        """What the index manifest records about the model (the driver's, checked on every worker)."""
        return self.local.describe()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text costs as a passage, counted on the driver."""
        return self.local.count_tokens(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Question embeddings, on the driver (a few dozen per language at build time)."""
        return self.local.encode_queries(texts)

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Normalized float32 passage embeddings, in order (contiguous pieces, round-robin over workers)."""
        pieces = shard(len(texts), len(self.actors), self.piece_size)
        if not pieces:
            return np.zeros((0, self.dim), np.float32)
        refs = [
            self.actors[i % len(self.actors)].encode_documents.remote(texts[start:end])
            for i, (start, end) in enumerate(pieces)
        ]
        return np.ascontiguousarray(np.concatenate(self._gather(refs)), dtype=np.float32)

    def close(self) -> None:
        """Stop the workers, freeing their CPUs and memory on the cluster."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _gather(ray, refs: list, timeout: float | None = None, workers: int = 0) -> list:
    """`ray.get(refs)`, a worker's failure as one line (its own QAError as itself)."""
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise QAError(
            f"{workers} Ray worker(s) were not all ready after {timeout} s: the cluster "
            "may lack free CPUs or memory (about 2 GB each). Ask for fewer with --ray-workers."
        ) from None
    except ray.exceptions.RayError as exc:
        if isinstance(getattr(exc, "cause", None), QAError):
            raise exc.cause from None  # the worker's own one-line error
        text = str(exc).strip()
        if isinstance(exc, ray.exceptions.OutOfMemoryError) or "out of memory" in text.lower():
            # Ray's memory monitor kills workers when the node is nearly full: say that, not its essay.
            what = "was killed by Ray for lack of memory on its node (about 2 GB each); run fewer workers"
        else:  # the last line of a remote traceback is the exception itself
            what = "failed: " + (text.splitlines()[-1][:300].rstrip(".") if text else type(exc).__name__)
        raise QAError(f"A Ray worker {what}. The previous index is unchanged.") from None


def _copy_part(url: str, version: int, part: dict) -> dict:
    """A Ray task: one part of a store version's rows COPYed from this worker (`copy_part`)."""
    import os

    import ray

    from qa.postgres.write import copy_part

    return {**copy_part(url, version, part), "node": ray.util.get_node_ip_address(), "pid": os.getpid()}


class RayRowCopier:
    """`copy_parts` for `qa.postgres.write.write_store`: each part of the new version's rows is
    sent to the database by a Ray task (one CPU each), at most `COPIES_IN_FLIGHT` per worker
    queued at a time. `writers` then holds (node, pid) of the processes that wrote each part."""

    def __init__(self, ray, workers: int):
        self._ray, self.workers = ray, workers
        self.writers: list[tuple[str, int]] = []

    def __call__(self, url: str, version: int, parts) -> dict[str, int]:
        ray = self._ray
        task = ray.remote(num_cpus=1)(_copy_part)
        pending, done = [], []
        for part in parts:
            if len(pending) >= COPIES_IN_FLIGHT * self.workers:
                ready, pending = ray.wait(pending, num_returns=1)
                done += _gather(ray, ready, workers=self.workers)
            pending.append(task.remote(url, version, part))
        done += _gather(ray, pending, workers=self.workers)
        self.writers = [(d["node"], d["pid"]) for d in done]
        return {name: sum(d[name] for d in done) for name in ("articles", "passages", "sentences")}


def _connect(ray, address: str | None) -> bool:
    """Start a new local Ray (address None or "local") or join the cluster at `address`; True if we did.

    A local Ray is always a new one of this process (`address="local"`): a bare `ray.init()` would
    join whatever cluster the machine has recorded or running (`RAY_ADDRESS`, an old `ray start`,
    another user's), and a dead one recorded made it retry for 13 minutes before failing. (Ray
    binds it to the machine's own address, not 127.0.0.1: `ray.init` replaces a loopback address.)
    """
    if ray.is_initialized():
        return False  # the caller's own session (a notebook, a test): use it, leave it running
    quiet = logging.WARNING  # Ray's INFO lines would bury the progress bar
    try:
        if address in (None, "local"):
            ray.init(address="local", include_dashboard=False, logging_level=quiet)
        else:
            ray.init(address=address, logging_level=quiet)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "no cluster"
        where = "a local Ray instance" if address in (None, "local") else f"the Ray cluster at {address!r}"
        reason = " ".join(str(exc).split())[:200].rstrip(".") or type(exc).__name__
        raise QAError(
            f"Cannot connect to {where}: {reason}. Check that `ray start --head` runs there and the "
            "address (auto, HOST:6379 or ray://HOST:10001) and ports are reachable."
        ) from None
    return True


def build_index_on_ray(
    corpus_dir: Path | str | None = None,
    *,
    settings: Settings,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    progress: bool = False,
    database_url: str | None = None,
):
    """`qa.index.build.build_index` with the embedding spread over Ray workers; returns its BuildReport,
    whose `seconds` include starting Ray and the workers.

    `address` None or "local" starts a local Ray (or uses one this process already joined);
    otherwise it is given to `ray.init` (`auto`, `HOST:6379`, `ray://HOST:10001`). `workers`
    defaults to as many as the cluster's CPUs allow at `cpus_per_worker` each.

    `database_url`: the index is then also written into that database as its new live version,
    its rows sent by the Ray workers (`RayRowCopier`); the store's report is the BuildReport's
    `store` attribute.
    """
    from qa.index.build import build_index

    began = time.perf_counter()
    ray = _import_ray()
    if (workers is not None and workers < 1) or cpus_per_worker < 1:
        raise QAError("--ray-workers and --ray-cpus-per-worker must be at least 1.")
    started = _connect(ray, address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        workers = workers or max(1, cpus // cpus_per_worker)
        if workers * cpus_per_worker > cpus:
            raise QAError(
                f"{workers} worker(s) × {cpus_per_worker} CPU(s) is more than the {cpus} CPU(s) of "
                "the Ray cluster. Lower --ray-workers, or add nodes."
            )
        with RayEmbedder(settings, workers, cpus_per_worker) as embedder:
            report = build_index(corpus_dir, settings=settings, progress=progress, embedder=embedder)
        report.seconds = round(time.perf_counter() - began, 2)  # Ray's start-up is part of the cost
        if database_url:  # (the embedding actors are gone: their CPUs now run the copies)
            report.store = _write_store_on_ray(ray, database_url, settings, cpus)
        return report
    finally:
        if started:
            ray.shutdown()


def _write_store_on_ray(ray, url: str, settings: Settings, workers: int):
    """The index just built, written into the database at `url` with its rows sent by Ray tasks."""
    from qa.index.load import open_index
    from qa.postgres.write import write_store

    copier = RayRowCopier(ray, max(1, workers))
    report = write_store(url, open_index(settings.index_dir), settings, copy_parts=copier, parts=copier.workers)
    report["writers"] = copier.writers
    return report
