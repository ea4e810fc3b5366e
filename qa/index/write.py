"""Writing an index version: the store, BM25, vectors, approximate indexes, statistics and the
manifest into a `.building-*` folder, renamed and made live by swapping `CURRENT` once complete
(`write_index` for vectors embedded elsewhere; `qa.index.build.build_index` for a corpus)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa.config import Settings
from qa.errors import QAError
from qa.index.ann import (
    AnnReport,
    RowsView,
    choose_kind,
    fill,
    n_lists,
    quantize_rows,
    train_ivf,
    tune_probes,
)
from qa.index.format import (
    ANN_DIR,
    FORMAT_VERSION,
    GROUPS,
    KEEP_VERSIONS,
    LANG_STATS,
    LANG_SUMS,
    LEXICAL,
    MANIFEST,
    SENTENCE_SCALES,
    SENTENCE_STATS,
    SENTENCE_SUMS,
    SENTENCE_VECTORS,
    SENTENCES,
    VECTOR_SCALES,
    VECTORS,
    Manifest,
    build_lock,
    current_version,
    fsync_dir,
    swap_pointer,
    write_file,
)
from qa.index.load import Index
from qa.index.statistics import fit_sums, sample_rows
from qa.index.store import STORE_DIR, StoreWriter, narrow_int, write_groups, write_sentence_links
from qa.index.verify import file_checksum, write_stamps
from qa.language_stats import LanguageSums
from qa.lexical import ANALYZER, LexicalWriter
from qa.models import Article, Chunk
from qa.rank import LanguageStats, translation_groups

__all__ = [
    "CHECKPOINT",
    "corpus_fingerprint",
    "library_versions",
    "publish",
    "remove_stale",
    "start_version",
    "write_index",
    "write_version",
]

log = logging.getLogger(__name__)

PASSAGE_BATCH = 4096  # passages looked up in the store and indexed together
CHECKPOINT = ".checkpoint-"  # + the build key: the vectors being embedded, memory-mapped (see `checkpoint_arrays`)

@contextlib.contextmanager
def _write_errors(building: Path) -> Iterator[None]:
    # A full disk or a read-only folder: say so in one line, and drop the half-written version
    # (the live one is untouched until the final swap of CURRENT).
    try:
        yield
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise QAError(
            f"Writing the new index failed at {exc.filename or building}: {exc.strerror or exc}. "
            "Free some disk space (or fix the folder's permissions) and run `qa index` again; "
            "the previous index is unchanged."
        ) from None
    except BaseException:
        # Anything else (articles read from a generator that fails, Ctrl-C): the half-written
        # version goes too, and the live one stays.
        shutil.rmtree(building, ignore_errors=True)
        raise


def library_versions() -> dict[str, str]:
    """The versions of qa, of the libraries that write an index and of Python, and the BM25
    analyzer, by name: what a manifest records of the code that wrote its version."""
    import faiss
    import sentence_transformers
    import torch

    import qa

    return {
        "qa": qa.__version__,
        "faiss": faiss.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "lexical_analyzer": str(ANALYZER),  # how the BM25 postings were tokenized (qa.lexical)
    }


def corpus_fingerprint(articles: list[Article]) -> str:
    """A hash of the set of articles (their content ids), independent of file order."""
    digest = hashlib.sha256()
    for doc_id in sorted(a.doc_id for a in articles):
        digest.update(doc_id.encode())
    return digest.hexdigest()[:20]


class _DocIds:
    """The doc_ids of the articles written, as compact byte strings (not Python objects), for
    `corpus_fingerprint` without holding the articles."""

    def __init__(self, block: int = 65536):
        self._blocks: list[np.ndarray] = []
        self._pending: list[bytes] = []
        self._block = block

    def add(self, doc_id: str) -> None:
        self._pending.append(doc_id.encode())
        if len(self._pending) >= self._block:
            self._blocks.append(np.array(self._pending, dtype=bytes))
            self._pending = []

    def fingerprint(self) -> str:
        """`corpus_fingerprint` of the articles added: UTF-8 bytes sort in code point order, as
        the doc_ids themselves (doc_ids hold no NUL, which fixed-width byte strings would drop)."""
        blocks = self._blocks + ([np.array(self._pending, dtype=bytes)] if self._pending else [])
        ids = np.sort(np.concatenate(blocks)) if blocks else []
        return hashlib.sha256(b"".join(ids)).hexdigest()[:20]


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of at most `size`."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    yield batch


def _new_version_name() -> str:
    # To the microsecond: names sort as the versions were made, which `remove_stale` relies on to
    # keep the one before the live one (an add and the merge after it can be a second apart).
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return f"v-{stamp}-{uuid.uuid4().hex[:6]}"


def remove_stale(index_dir: Path, keep: set[str], checkpoints: bool = True) -> None:
    """Remove from `index_dir` the leftovers of crashed builds (`.building-*` folders) and, but
    for those named in `keep`, the versions older than the last `KEEP_VERSIONS` and (with
    `checkpoints`) the embedding checkpoints."""
    for path in index_dir.glob(".building-*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in index_dir.glob(f"{CHECKPOINT}*") if checkpoints else []:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    versions = sorted(p for p in index_dir.glob("v-*") if p.is_dir())
    for path in versions[:-KEEP_VERSIONS]:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def write_index(
    index_dir: Path,
    articles: Iterable[Article],
    chunks: Iterable[Chunk],
    vectors: np.ndarray,
    sentences: np.ndarray,
    sentence_vectors: np.ndarray,
    *,
    settings: Settings,
    model: dict[str, Any],
    chunking: dict[str, Any],
    query_means: dict[str, np.ndarray],
    groups: np.ndarray | None = None,
    recall_queries: np.ndarray | None = None,
) -> tuple[str, dict[str, AnnReport]]:
    """Write already-embedded passages as a new live index version (for vectors computed
    elsewhere: a benchmark's synthetic corpus, another embedding pipeline). `groups` defaults
    to the translation groups found from the vectors; `recall_queries` (question vectors,
    centred as the engine centres them) to a sample of the sentence vectors. Returns the version
    and how each language is searched.

    `articles` and `chunks` may be any iterables, e.g. generators reading them from disk: they
    are read once, in that order (every article before the first passage), and written as they
    come, so the writer's memory does not grow with the corpus (a few numbers a passage, the
    BM25 vocabulary, and one language's IVF index at a time). `chunks` are in the order of
    `vectors`' rows; `vectors` and `sentence_vectors` are best memory-mapped."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with build_lock(index_dir):
        remove_stale(index_dir, keep={current_version(index_dir) or ""})
        return write_version(
            start_version(index_dir), articles, chunks, vectors, sentences, sentence_vectors, settings=settings,
            model=model, chunking=chunking, query_means=query_means, previous=None, groups=groups,
            recall_queries=recall_queries,
        )


def _vector_search(
    vectors: np.ndarray, lang_codes: np.ndarray, langs: list[str], queries: np.ndarray,
    settings: Settings, previous: Index | None, folder: Path | None = None,
) -> dict[str, tuple[AnnReport, Any]]:
    """Per language: how it is searched and, for large languages, its filled IVF index.

    `lang_codes`: each passage's language, a position in `langs` (sorted). With `folder`,
    each IVF index is written there as soon as it is built and dropped (None in the result):
    one language's index in memory at a time. A language's vectors are read a block of rows at
    a time (`RowsView`), never copied out whole.

    An incremental build reuses the previous IVF lists of a language (emptied and refilled:
    only the assignment of vectors to lists is redone) unless the language has more than
    doubled or halved since they were trained, in which case they are retrained and the build
    says so. nprobe and the probe gap (see `qa.index.ann.ProbedIVF`) are re-tuned every build.
    """
    import faiss

    # `queries` are of every language: a question in one language searches every language's
    # index (the cross-language case is the hard one).
    out: dict[str, tuple[AnnReport, Any]] = {}
    counts = np.bincount(lang_codes, minlength=len(langs))
    for position, lang in enumerate(langs):
        if not counts[position]:
            continue
        rows = RowsView(vectors, np.flatnonzero(lang_codes == position))
        kind = choose_kind(len(rows), settings.index_type, settings.ann_min_passages)
        if kind == "flat" or not len(queries):
            out[lang] = (AnnReport("flat", len(rows)), None)
            continue
        old_spec = previous.manifest.index.languages.get(lang) if previous else None
        old_index = previous.ann[lang].index if previous and lang in previous.ann else None
        trained_on = old_spec.trained_on if old_spec else 0
        if old_index is not None and 0.5 <= len(rows) / max(trained_on, 1) <= 2:
            index = faiss.clone_index(old_index)
            index.reset()
        else:
            if old_index is not None:
                log.warning(
                    "%s: %s passages, the IVF lists were trained on %s: retraining them.",
                    lang, f"{len(rows):,}", f"{trained_on:,}",
                )
            trained_on = len(rows)
            index = train_ivf(rows, n_lists(len(rows)))
        fill(index, rows)
        nprobe, gap, recall = tune_probes(index, rows, queries, settings.ann_target_recall, settings.candidates)
        if recall < settings.ann_target_recall and settings.index_type == "auto":
            # Even a quarter of the lists misses the target (small or structureless languages):
            # exact search, about as fast there, is the better index.
            out[lang] = (AnnReport("flat", len(rows), nlist=int(index.nlist), nprobe=nprobe, recall_at_10=round(recall, 4),
                                   recall_queries=len(queries), target_recall=settings.ann_target_recall), None)
            continue
        report = AnnReport(
            "ivf_sq8", len(rows), nlist=int(index.nlist), nprobe=nprobe, trained_on=trained_on,
            recall_at_10=round(recall, 4), recall_queries=len(queries), target_recall=settings.ann_target_recall,
            file=f"{ANN_DIR}/{position:03d}.faiss", probe_gap=gap,
        )
        if folder is not None:
            (folder / ANN_DIR).mkdir(exist_ok=True)
            write_file(folder / report.file, faiss.serialize_index(index).tobytes())
            index = None
        out[lang] = (report, index)
    return out


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def start_version(index_dir: Path) -> Path:
    """A new, empty `.building-<version>` folder (renamed to `<version>` when complete)."""
    building = index_dir / f".building-{_new_version_name()}"
    building.mkdir()
    return building


def write_version(
    building: Path,
    articles: Iterable[Article],
    chunks: Iterable[Chunk],
    vectors: np.ndarray,
    sentences: np.ndarray,
    sentence_vectors: np.ndarray,
    *,
    settings: Settings,
    model: dict[str, Any],
    chunking: dict[str, Any],
    query_means: dict[str, np.ndarray],
    previous: Index | None,
    groups: np.ndarray | None = None,
    recall_queries: np.ndarray | None = None,
    query_sample: dict[str, np.ndarray] | None = None,
    sums: tuple[LanguageSums, LanguageSums] | None = None,
) -> tuple[str, dict[str, AnnReport]]:
    """Write a complete new version into `building`, then make it live (the caller holds the
    build lock). An approximate index's recall is tuned on `recall_queries` (see
    `tuning_queries`), else on a sample of the sentence vectors. `query_sample`: the question
    sample `query_means` are the means of, summed into the stored sums (without it, each mean
    is stored as a sample of one). `sums`: the passages' and the sentences' `LanguageSums` to
    store instead of fitting them from the vectors (a merge of segments carries its segments'
    sums, question sample included). Returns the version's name and each language's `AnnReport`."""
    version = building.name.removeprefix(".building-")
    with _write_errors(building):
        # Articles and passages go to disk as they come (the store's records, BM25's runs):
        # what stays in memory is a few numbers per passage and the vocabulary.
        store = StoreWriter(building)
        doc_ids = _DocIds()
        for article in articles:
            store.add_article(article)
            doc_ids.add(article.doc_id)
        lexical = LexicalWriter(building / ".bm25-runs")
        n_passages = 0
        for batch in _batches(chunks, PASSAGE_BATCH):
            store.add_passages(batch)
            for chunk in batch:
                lexical.add(chunk.text)
            n_passages += len(batch)
        del batch
        if n_passages != len(vectors):
            raise ValueError(f"{n_passages} passages but {len(vectors)} vectors")
        langs, languages, n_articles = store.languages(), store.lang_counts(), store.n_articles
        article_codes = store.article_lang_codes()
        columns, passage_codes = store.close()
        write_sentence_links(building, columns, passage_codes, sentences)
        del columns
        sentence_codes = article_codes[np.asarray(sentences[:, 0], np.int64)] if len(sentences) else np.zeros(0, np.int8)
        # int8 codes and a scale per passage, as the sentence vectors, written a block at a time
        # into the file: only re-scoring and the exact search of small languages read them, and
        # a score moves by ~3e-4 ("Format 6" in benchmarks/README.md), 388 B a passage where
        # float16 took 768. The search structures below are built from the float32 vectors.
        stored = np.lib.format.open_memmap(building / VECTORS, mode="w+", dtype=np.int8, shape=vectors.shape)
        vector_scales = quantize_rows(vectors, out=stored)[1]
        stored.flush()
        del stored
        _fsync(building / VECTORS)
        write_file(building / VECTOR_SCALES, vector_scales)
        del vector_scales
        if recall_queries is None or not len(recall_queries):
            recall_queries = sample_rows(sentence_vectors)
        search = _vector_search(vectors, passage_codes, langs, recall_queries, settings, previous, folder=building)
        # Statistics from sums, and the sums kept beside them (float64: 1.2 MB a language at
        # 384 dimensions): added to the sums of other passages they give the statistics of all.
        sums = given_sums[0] if (given_sums := sums) else fit_sums(
            vectors, passage_codes, langs, query_sample or {k: v[None] for k, v in query_means.items()}
        )
        stats = LanguageStats.from_sums(sums)
        stats.query_means = query_means  # the sample's float32 means, as `question_sample` gave them
        with (building / LANG_STATS).open("wb") as handle:
            np.savez(handle, **stats.to_arrays())
        with (building / LANG_SUMS).open("wb") as handle:
            np.savez(handle, **sums.to_arrays())
        del sums
        if groups is None:
            # Centred a block of rows at a time, as they are compared (not a centred copy of
            # every vector): the same floats, row by row, as `stats.centered` of all of them.
            passage_langs = np.array(langs)[passage_codes]
            ids = stats.lang_ids(passage_langs)
            groups = translation_groups(
                vectors, passage_langs, settings.group_threshold,
                rows_of=lambda rows: stats.centered(vectors[rows], ids[rows]),
            )
            del passage_langs, ids
        write_file(building / GROUPS, narrow_int(np.asarray(groups, np.int64)))
        write_groups(building, groups)
        lexical.close(building / LEXICAL)
        write_file(building / SENTENCES, narrow_int(np.asarray(sentences)))
        # The int8 codes are written straight into their file (page cache, not heap: 1.8 GB
        # for the 4.7M sentences of a million passages).
        codes = np.lib.format.open_memmap(
            building / SENTENCE_VECTORS, mode="w+", dtype=np.int8, shape=sentence_vectors.shape
        )
        scales = quantize_rows(sentence_vectors, out=codes)[1]
        codes.flush()
        del codes
        _fsync(building / SENTENCE_VECTORS)
        write_file(building / SENTENCE_SCALES, scales)
        sums = given_sums[1] if given_sums else fit_sums(sentence_vectors, sentence_codes, langs)
        with (building / SENTENCE_STATS).open("wb") as handle:
            np.savez(handle, **LanguageStats.from_sums(sums).to_arrays())
        with (building / SENTENCE_SUMS).open("wb") as handle:
            np.savez(handle, **sums.to_arrays())
        written = {
            path.relative_to(building).as_posix(): path for path in sorted(building.rglob("*")) if path.is_file()
        }
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            model=model,
            chunking=chunking,
            corpus={
                "fingerprint": doc_ids.fingerprint(),
                "articles": n_articles,
                "passages": n_passages,
                "languages": languages,
            },
            index={
                "type": "per_language",
                "metric": "inner_product",
                "index_type": settings.index_type,
                "ann_min_passages": settings.ann_min_passages,
                "ntotal": n_passages,
                "languages": {lang: asdict(report) for lang, (report, _) in search.items()},
            },
            files={name: path.stat().st_size for name, path in written.items()},
            # Read back from the page cache: 3.8 s at a million passages (5.7 GB), of a 6-minute write.
            checksums={name: file_checksum(path) for name, path in written.items()},
            versions=library_versions(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        write_file(building / MANIFEST, manifest.model_dump_json(indent=2).encode())
        write_stamps(building, list(written))  # hashed just now: a load needs not hash them again
        publish(building, [building / ANN_DIR, building / LEXICAL, building / STORE_DIR])
    return version, {lang: report for lang, (report, _) in search.items()}


def publish(building: Path, folders: list[Path]) -> str:
    """Make the complete version in `building` (a `.building-<version>` folder) the live one:
    the entries of `folders` (those that exist) and of `building` made durable, the folder renamed
    to its version's name, `CURRENT` swapped, the stale versions removed. Returns the version's
    name. How every version, whole or an add's (`qa.index.segments.add`), goes live."""
    index_dir, version = building.parent, building.name.removeprefix(".building-")
    for sub in folders:
        if sub.is_dir():
            fsync_dir(sub)
    fsync_dir(building)
    building.rename(index_dir / version)
    swap_pointer(index_dir, version)
    remove_stale(index_dir, keep={version})
    return version
