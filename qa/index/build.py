"""Building an index version: corpus -> passages -> vectors -> a new version beside the live one.

A build writes a complete new version (the files of `qa.index.format`) into a `.building-*`
folder, renames it, and then swaps `CURRENT`, so a crash or Ctrl-C at any point leaves the
previous index loadable, and a running server can switch to the new version between two
questions. An incremental build reuses the vectors of unchanged articles; an article that fails
at any stage is left out and named in the report, the others are indexed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from qa.config import Settings
from qa.errors import IndexNotFoundError, QAError
from qa.index.embedding import (  # noqa: F401 -- also imported from here (tests, benchmarks)
    EMBED_BLOCK,
    EMBED_SLICE,
    PassageSpool,
    checkpoint_arrays,
    drop_sentences,
    each_row,
    embed_sentences,
    embed_with_progress,
    failure_reason,
    progress_bar,
    row_blocks,
    sentence_rows_of,
    skipped_article,
    take_rows,
)
from qa.index.format import (
    FORMAT_VERSION,
    SENTENCES,
    Manifest,
    atomic_write,
    build_lock,
    current_version,
)
from qa.index.load import Index, open_index
from qa.index.segments import AddPlan, add_segment, changed_articles, live_rows, plan_add, segment_dirs
from qa.index.statistics import (  # noqa: F401 -- also imported from here (tests, benchmarks)
    fit_stats,
    query_means,
    question_sample_from,
    read_sums,
    sample_means,
    tuning_queries,
)
from qa.index.write import (  # noqa: F401 -- also imported from here (tests, benchmarks)
    CHECKPOINT,
    corpus_fingerprint,
    library_versions,
    remove_stale,
    start_version,
    write_index,
    write_version,
)
from qa.lexical import ANALYZER
from qa.models import Article, SkippedFile

__all__ = ["BuildReport", "build_index", "carry_build_records", "corpus_fingerprint", "keep_corpus_record", "query_means",
           "read_sums", "write_index"]

log = logging.getLogger(__name__)

BUILD_KEY = "BUILT"  # beside CURRENT: the live version and the key of what it was built from


class BuildReport(BaseModel):
    """The summary `qa index` prints."""

    index_dir: str
    version: str
    articles: int
    passages: int
    embedded: int
    reused: int
    sentences: int
    sentences_embedded: int
    removed_articles: int
    languages: dict[str, int]
    updated_articles: int = 0  # the same title and text with new metadata (a date...): written again
    search: list[str] = []  # how each large language is searched (approximate index, recall)
    kinds: dict[str, int] = {}  # articles per kind of input: html, warc, feed, pdf, text, ...
    encodings: dict[str, int] = {}  # articles per encoding their file was read in
    skipped: list[SkippedFile]
    seconds: float
    up_to_date: bool = False  # nothing changed since the live version: nothing was written
    store: dict | None = None  # `qa index --ray --database`: the store write (qa.postgres.write.StoreReport)
    segments: int = 0  # the change was written as a new segment: the live version's segments (else 0)
    merged: int = 0  # segments then merged into one (`qa.index.segments.merge`), and how long it took
    merge_seconds: float = 0.0
    files_read: int | None = None  # corpus files read (the others unchanged since the live version); None: all


def _reusable(index_dir: Path, model: dict[str, Any], chunking: dict[str, Any]) -> Index | None:
    """The previous index, if its passages and vectors can be reused for an incremental build."""
    try:
        previous = open_index(index_dir)
    except IndexNotFoundError:
        return None
    except QAError as exc:
        log.warning("Previous index not reusable, rebuilding everything: %s", exc)
        return None
    if previous.manifest.model.fingerprint != model["fingerprint"]:
        log.warning("The model changed since the last build: embedding everything again.")
        return None
    if previous.manifest.chunking.model_dump() != chunking:
        log.warning("Chunking settings changed since the last build: embedding everything again.")
        return None
    return previous


def build_key(articles: list[Article], settings: Settings, model_fingerprint: str) -> str:
    """A hash of everything a build's output depends on: every article (text and metadata), the
    model, the settings a build reads, and the format. Equal keys mean an identical index."""
    from qa.ingest.corpus import article_digest

    ordered = sorted(articles, key=lambda a: (a.doc_id, a.source))
    return _build_key((article_digest(a.model_dump_json().encode()) for a in ordered), settings, model_fingerprint)


def _build_key(article_digests: Iterable[bytes], settings: Settings, model_fingerprint: str) -> str:
    """`build_key` of the articles' digests (`qa.ingest.corpus.article_digest` of their JSON), given
    sorted by (doc_id, source) (`CorpusScan.digests_by_id`): a digest an article, so that the
    articles of files not read (unchanged since the live version) count by their recorded digest."""
    import qa

    digest = hashlib.sha256()
    for data in article_digests:
        digest.update(data)
    used = {
        name: str(getattr(settings, name))
        for name in (
            "model", "chunk_tokens", "chunk_overlap", "group_threshold", "index_type", "ann_min_passages",
            "ann_target_recall", "candidates", "query_centering",
        )
    }
    # (ANALYZER: a change of BM25's tokenization rebuilds an otherwise unchanged index)
    digest.update(repr((sorted(used.items()), model_fingerprint, FORMAT_VERSION, qa.__version__, ANALYZER)).encode())
    return digest.hexdigest()


def _model_fingerprint(embedder) -> str:
    # Without loading the model: the configured one's fingerprint is a hash of its files.
    fingerprint = getattr(embedder, "fingerprint", None)
    return fingerprint if isinstance(fingerprint, str) else embedder.describe()["fingerprint"]


def _up_to_date(index_dir: Path, key: str) -> tuple[str, Manifest] | None:
    """The live version and its manifest when it was built from exactly `key` and its files
    are all there at their recorded sizes (a damaged index is rebuilt, not kept)."""
    from qa.index.format import read_manifest

    version = current_version(index_dir)
    try:
        recorded = json.loads((index_dir / BUILD_KEY).read_text(encoding="utf-8"))
        if not version or recorded != {"version": version, "key": key}:
            return None
        manifest = read_manifest(index_dir / version)
        for name, size in manifest.files.items():
            if (index_dir / version / name).stat().st_size != size:
                return None
        for folder in segment_dirs(index_dir / version):  # a segmented version: each segment's files too
            if folder != index_dir / version:
                for name, size in read_manifest(folder).files.items():
                    if (folder / name).stat().st_size != size:
                        return None
    except (OSError, ValueError, QAError):
        return None
    return version, manifest


def _record_build_key(index_dir: Path, version: str, key: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps({"version": version, "key": key}), encoding="utf-8")

    atomic_write(index_dir / BUILD_KEY, write)


def keep_corpus_record(index_dir: Path, version: str) -> Path | None:
    """A hard link to `version`'s corpus files' record beside the versions (where removing stale
    versions does not reach it), for `carry_build_records`; None when it has none."""
    from qa.index.corpus_files import CORPUS_FILES

    kept = index_dir / f".record-{version}"
    with contextlib.suppress(OSError):
        kept.unlink(missing_ok=True)
        os.link(index_dir / version / CORPUS_FILES, kept)
        return kept
    return None


def carry_build_records(index_dir: Path, old_version: str, new_version: str, record: Path | None) -> None:
    """Give `new_version`, which holds the same articles as `old_version` (a merge of its
    segments), the corpus files' record (`record`, kept by `keep_corpus_record`: publishing the
    new version may have removed the old one) and the build key of `old_version`: the next
    `qa index` still skips unchanged files, and a run with nothing changed writes nothing."""
    from qa.index.corpus_files import CORPUS_FILES

    if record is not None:
        with contextlib.suppress(OSError):
            os.replace(record, index_dir / new_version / CORPUS_FILES)
    try:
        recorded = json.loads((index_dir / BUILD_KEY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if recorded.get("version") == old_version:
        _record_build_key(index_dir, new_version, recorded["key"])


def build_index(
    corpus_dir: Path | str | None = None,
    *,
    settings: Settings | None = None,
    progress: bool = False,
    embedder=None,
    segments: str = "auto",
    read_all: bool = False,
    merge: bool = True,
) -> BuildReport:
    """Build or update the index from `corpus_dir`, embedding only new or changed articles.

    `embedder` defaults to the configured model (`qa.embed.get_embedder`). `segments`: "auto"
    writes a small change as a new segment of the live index (`qa.index.segments.plan_add`),
    "segment" always does when there is a live index, "rebuild" writes a whole new version.
    A corpus file whose size and modification time are those the live version recorded is not
    read again (`qa.index.corpus_files`) unless `read_all` (or "rebuild", or the change turns
    out to be a full build, which reads every file the first pass did not). Once an add is live,
    segments are merged as `qa.index.segments.merge` says (unless not `merge`).
    """
    from qa.chunk import chunk_article, chunking_params
    from qa.embed import get_embedder
    from qa.index.corpus_files import read_corpus_files, write_corpus_files
    from qa.ingest.corpus import scan_corpus
    from qa.readers import input_kind

    settings = settings or Settings()
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else settings.corpus_dir
    index_dir = settings.index_dir
    started = time.perf_counter()
    if not corpus_dir.is_dir():
        raise QAError(f"Corpus folder {corpus_dir} does not exist. Pass the folder of your articles.")
    index_dir.mkdir(parents=True, exist_ok=True)

    with build_lock(index_dir), contextlib.ExitStack() as spools:
        # (A checkpoint of an interrupted build is kept until the corpus is read: see below.)
        remove_stale(index_dir, keep={current_version(index_dir) or ""}, checkpoints=False)
        # The corpus is read (and each file parsed) once, into a spool beside the index; from
        # here on articles and passages come one at a time from disk, and what is held is a few
        # numbers per article and per passage, never their text.
        # Files unchanged since the live version are not read again (`qa.index.corpus_files`).
        live_version = current_version(index_dir)
        reuse_files = live_version and not read_all and segments != "rebuild"
        # (the record also tells an add which articles it read have new metadata: `plan_for`)
        use_record = live_version and segments != "rebuild"
        record = read_corpus_files(index_dir / live_version, corpus_dir) if use_record else {}
        known = record if reuse_files else {}
        scan = spools.enter_context(scan_corpus(corpus_dir, spool_dir=index_dir, known=known))
        skipped = scan.skipped
        if not len(scan):
            raise QAError(
                f"No readable articles in {corpus_dir} ({len(skipped)} file(s) skipped). Add .txt, "
                ".md, .html or .jsonl files; the existing index was left as it was."
            )
        embedder = embedder or get_embedder(settings)
        # Nothing changed: say so without loading the model or writing a version (a no-op re-run
        # took 11-21 s and wrote a copy of the live version).
        key = _build_key(scan.digests_by_id(), settings, _model_fingerprint(embedder))
        if (live := _up_to_date(index_dir, key)) is not None:
            if scan.read:  # (files read again: racy or new to the record)
                write_corpus_files(index_dir / live[0], corpus_dir, scan.files, set())
            return _unchanged_report(index_dir, *live, skipped, time.perf_counter() - started, scan)
        # An interrupted build of exactly these articles left vectors to resume from; any other
        # checkpoint is of a corpus or settings that are gone.
        remove_stale(index_dir, keep={current_version(index_dir) or "", f"{CHECKPOINT}{key[:20]}"})
        model = embedder.describe()
        budget = min(settings.chunk_tokens, embedder.max_tokens)
        chunking = chunking_params(budget, settings.chunk_overlap)
        previous = _reusable(index_dir, model, chunking)
        # Everything new goes into a fresh folder; the live version is not touched until the swap.
        building = start_version(index_dir)

        def plan_for(scan) -> tuple[dict[str, list[int]], int, set[str], AddPlan | None]:
            # The live rows of each article still in the corpus, and those of the articles gone:
            # from the store's columns and its doc_id look-up (not a `Chunk` read per passage).
            old_rows, gone_rows, gone = live_rows(previous, scan.doc_ids)
            # Articles read again with new metadata are written again, not kept as they were (a
            # full build rewrites every article anyway).
            changed = set() if segments == "rebuild" else changed_articles(
                previous, scan.read_files(), old_rows, record, {f.source for f in scan.files}
            )
            # A small change goes to a new segment: only its articles are written (`qa.index.segments`).
            plan = plan_add(previous, scan.doc_ids, old_rows, gone_rows, gone, segments, changed)
            return old_rows, gone, changed, plan

        old_rows, gone, changed, plan = plan_for(scan)
        if (not_read := scan.not_read) and (plan is None or not not_read <= plan.unchanged):
            # A full build (or an article of a file not read is not live: it failed before)
            # needs every article's text: the corpus is read whole, but for the files just read
            # (unchanged since: their articles are copied from the first scan's spool).
            first = scan
            scan = spools.enter_context(scan_corpus(corpus_dir, spool_dir=index_dir, earlier=first))
            first.close()
            skipped = scan.skipped
            key = _build_key(scan.digests_by_id(), settings, _model_fingerprint(embedder))
            old_rows, gone, changed, plan = plan_for(scan)
        unchanged = plan.unchanged if plan is not None else set()

        # An article that fails at any stage (an unforeseen text, a bug) is left out of this build
        # and named in the summary with the reason; the others are indexed. doc_id -> reason.
        failed: dict[str, str] = {}
        passages = PassageSpool(index_dir)
        spools.callback(passages.close)
        doc_ids, langs, kinds, encodings = scan.doc_ids, [], [], []
        for position, article in scan.in_order():
            if article is None:  # its file is unchanged since the live version (not read): `unchanged`
                langs.append("")
                kinds.append("")
                encodings.append("")
                continue
            # (interned: a few distinct strings, not one object an article)
            langs.append(sys.intern(article.lang))
            kinds.append(sys.intern(input_kind(article.source)))
            encodings.append(sys.intern(article.encoding or "n/a"))  # n/a: PDF
            if article.doc_id in unchanged:  # stays in its segment
                continue
            rows = old_rows.get(article.doc_id)
            if rows:
                for row in rows:
                    passages.add(previous.chunks[row], position, row)
                continue
            try:
                new = chunk_article(article, embedder.count_tokens, budget, settings.chunk_overlap)
            except Exception as exc:  # noqa: BLE001 -- reported in the summary, see `failed`
                failed[article.doc_id] = failure_reason("splitting it into passages", article.source, exc)
                continue
            for chunk in new:
                passages.add(chunk, position, -1)
        passages.finish()
        if plan is not None and not len(passages):  # only removals (or every new article failed)
            version = add_segment(building, previous, plan, None, _live_fingerprint(doc_ids, failed))
            _record_build_key(index_dir, version, key)
            write_corpus_files(index_dir / version, corpus_dir, scan.files, set(failed))
            return _segment_report(
                index_dir, version, 0, skipped + _failed_articles(scan, failed), started, gone=gone, scan=scan,
                merged=_merge_after_add(index_dir, settings, merge), updated=len(changed),
            )
        reuse, owner = passages.reuse, passages.owner

        scratch = index_dir / f"{CHECKPOINT}{key[:20]}"
        vectors, done = checkpoint_arrays(scratch, "vectors", (len(passages), model["dim"]))
        bar = progress_bar(progress, int((reuse < 0).sum()), "passages")
        for block in row_blocks(np.flatnonzero(reuse < 0)):
            embed_with_progress(
                embedder, [passages[row].text for row in block.tolist()], progress,
                owners=[doc_ids[o] for o in owner[block].tolist()], failed=failed, out=vectors, rows=block,
                done=done, bar=bar,
            )
        bar.close()
        for block in row_blocks(np.flatnonzero(reuse >= 0)):
            vectors[block] = previous.passage_vectors[reuse[block].tolist()]

        def kept() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # (articles kept, their new number by old number, passages kept), without `failed`
            keep = np.array([doc_id not in failed and doc_id not in unchanged for doc_id in doc_ids], dtype=bool)
            return keep, np.cumsum(keep) - 1, np.flatnonzero(keep[owner])

        keep, number, rows = kept()
        kept_ids = [doc_id for doc_id, k in zip(doc_ids, keep.tolist()) if k]
        failed_before, left_out = len(failed), set(failed)
        sentences, sentence_vectors, sentences_new = embed_sentences(
            (a for a in scan if a.doc_id not in left_out and a.doc_id not in unchanged), kept_ids, passages, rows,
            number, previous if plan is None or changed else None, embedder, progress, failed, scratch,
            # (an add looks up only the sentences of the articles it writes again, not every one)
            reuse=None if plan is None else sentence_rows_of(previous, {d: old_rows[d] for d in changed}),
        )
        if len(failed) > failed_before:  # some articles failed at embedding their sentences
            sentences, sentence_vectors, sentences_new = drop_sentences(
                failed, kept_ids, sentences, sentence_vectors, sentences_new
            )
            keep, number, rows = kept()
        if not keep.any():
            shutil.rmtree(building, ignore_errors=True)
            first = next(a for a in scan if a.doc_id in failed)
            raise QAError(
                f"Every article of {corpus_dir} failed ({len(failed)}); the first, {first.source} "
                f"({first.title[:80]!r}): {failed[first.doc_id]}. Fix the articles (QA_DEBUG=1 shows the "
                "details) and run `qa index` again; the existing index was left as it was."
            )
        if failed:
            skipped = skipped + [skipped_article(a, failed[a.doc_id]) for a in scan if a.doc_id in failed]
            vectors = take_rows(vectors, rows, scratch / "kept_vectors.npy")
        sample = question_sample_from(embedder, lambda: ((passages[row].text, langs[owner[row]]) for row in each_row(rows)))
        means = sample_means(sample)
        def write(folder: Path, previous=previous, groups=None) -> tuple[str, dict]:
            return write_version(
                folder, (a for a in scan if a.doc_id not in failed and a.doc_id not in unchanged),
                (passages[row] for row in each_row(rows)), vectors, sentences, sentence_vectors,
                settings=settings, model=model, chunking=chunking, query_means=means, previous=previous,
                recall_queries=tuning_queries(sample, means, settings.query_centering), query_sample=sample,
                groups=groups,
            )

        if plan is not None:
            # The new segment is written as a version of its own inside the new version's folder.
            # The new passages' translations, among themselves too, are found at the add against
            # every live passage with the new version's statistics (the segment's own groups are
            # of one; `qa.index.segments.groups`).
            version = add_segment(
                building, previous, plan,
                lambda folder: write(start_version(folder), None, np.arange(len(rows)))[0],
                _live_fingerprint(doc_ids, failed), settings.group_threshold,
            )
            if not failed:
                _record_build_key(index_dir, version, key)
            write_corpus_files(index_dir / version, corpus_dir, scan.files, set(failed))
            return _segment_report(
                index_dir, version, int((reuse[rows] < 0).sum()), skipped, started,
                sentences=int(sentences_new.sum()), gone=gone, scan=scan,
                merged=_merge_after_add(index_dir, settings, merge), updated=len(changed - set(failed)),
            )
        version, search = write(building)

        if not failed:  # with articles left out, a re-run must retry them
            _record_build_key(index_dir, version, key)
        write_corpus_files(index_dir / version, corpus_dir, scan.files, set(failed))

    removed = gone + len(set(old_rows) - {doc_id for doc_id, k in zip(doc_ids, keep.tolist()) if k})
    kept_list = keep.tolist()
    return BuildReport(
        index_dir=str(index_dir),
        version=version,
        articles=int(keep.sum()),
        passages=len(rows),
        embedded=int((reuse[rows] < 0).sum()),
        reused=int((reuse[rows] >= 0).sum()),
        sentences=len(sentences),
        sentences_embedded=int(sentences_new.sum()),
        removed_articles=removed,
        updated_articles=len(changed - set(failed)),
        languages=dict(sorted(Counter(x for x, k in zip(langs, kept_list) if k).items())),
        search=[r.describe(lang) for lang, r in search.items() if r.recall_at_10 is not None],
        kinds=dict(Counter(x for x, k in zip(kinds, kept_list) if k).most_common()),
        encodings=dict(Counter(x for x, k in zip(encodings, kept_list) if k).most_common()),
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 2),
        files_read=_files_read(scan),
    )


def _files_read(scan) -> int | None:
    return scan.read if scan.read < len(scan.files) else None


def _live_fingerprint(doc_ids: list[str], failed: dict[str, str]) -> str:
    """`corpus_fingerprint` of the live articles after an add: every article of the corpus but
    those that failed (the kept ones, not read, count by their recorded doc_id)."""
    digest = hashlib.sha256()
    for doc_id in sorted(d for d in doc_ids if d not in failed):
        digest.update(doc_id.encode())
    return digest.hexdigest()[:20]


def _failed_articles(scan, failed: dict[str, str]) -> list[SkippedFile]:
    return [skipped_article(a, failed[a.doc_id]) for a in scan if a.doc_id in failed]


def _merge_after_add(index_dir: Path, settings: Settings, merge: bool):
    """The segments merged once an add is live (`qa.index.segments.merge`; the build lock is
    held), None when none were (or not `merge`)."""
    from qa.index.segments.merge import merge_live

    return merge_live(index_dir, settings) if merge else None


def _segment_report(
    index_dir: Path, version: str, embedded: int, skipped: list[SkippedFile], started: float, sentences: int = 0,
    gone: int = 0, scan=None, merged=None, updated: int = 0,
) -> BuildReport:
    """The summary of an add written as a segment (`qa.index.segments`), then maybe `merged`
    (a `MergeReport`): the live index's totals."""
    from qa.index.format import read_manifest

    version = merged.version if merged is not None else version
    manifest = read_manifest(index_dir / version)
    passages = manifest.corpus.passages
    return BuildReport(
        index_dir=str(index_dir), version=version, articles=manifest.corpus.articles, passages=passages,
        embedded=embedded, reused=passages - embedded, sentences=_sentence_count(index_dir / version),
        sentences_embedded=sentences,
        removed_articles=gone, updated_articles=updated, languages=manifest.corpus.languages, skipped=skipped,
        seconds=round(time.perf_counter() - started, 2), segments=len(segment_dirs(index_dir / version)),
        files_read=_files_read(scan) if scan is not None else None,
        merged=merged.merged_segments if merged is not None else 0,
        merge_seconds=merged.seconds if merged is not None else 0.0,
    )


def _unchanged_report(
    index_dir: Path, version: str, manifest: Manifest, skipped: list[SkippedFile], seconds: float, scan=None
) -> BuildReport:
    corpus = manifest.corpus
    return BuildReport(
        index_dir=str(index_dir), version=version, articles=corpus.articles, passages=corpus.passages,
        embedded=0, reused=corpus.passages, sentences=_sentence_count(index_dir / version),
        sentences_embedded=0, removed_articles=0, languages=dict(sorted(corpus.languages.items())),
        skipped=skipped, seconds=round(seconds, 2), up_to_date=True,
        files_read=_files_read(scan) if scan is not None else None,
    )


def _sentence_count(version_dir: Path) -> int:
    """The live sentences of a version: the sentence tables' rows (counted without reading them,
    being (article, start, end) integer rows), less the tombstoned ones (counted in their sums)."""
    from qa.index.segments import DELETED_SENTENCE_SUMS, segment_dirs
    from qa.index.segments.read import read_sums_file

    total = sum(int(np.load(folder / SENTENCES, mmap_mode="r").shape[0]) for folder in segment_dirs(version_dir))
    deleted = version_dir / DELETED_SENTENCE_SUMS
    return total - (int(read_sums_file(deleted).counts.sum()) if deleted.is_file() else 0)
