"""Adding to a live version: a new segment, tombstones and the tombstoned rows' sums (`add_segment`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from qa.index.format import (
    MANIFEST,
    STAMPS,
    Manifest,
    read_manifest,
    write_file,
)
from qa.index.segments import (
    DELETED_SENTENCE_SUMS,
    DELETED_SUMS,
    SEGMENT_DIR,
    SEGMENT_SHARE,
    SEGMENTS,
    groups,
)
from qa.index.segments.groups import GROUP_LINKS, find_links
from qa.index.segments.read import SegmentedIndex, merged_stats, read_sums_file
from qa.language_stats import LanguageSums, merge_sums, moment_sums

__all__ = ["AddPlan", "add_segment", "articles_by_language", "changed_articles", "deleted_sums_of",
           "finish_segmented", "link_segment", "live_rows", "plan_add", "write_new_segment"]

log = logging.getLogger(__name__)


class AddPlan:
    """What an add changes: the live articles kept as they are (by doc_id), and the rows to
    tombstone in each segment of the previous version (the passages of removed articles, and of
    the articles written again with new metadata)."""

    def __init__(self, unchanged: set[str], deleted: dict[int, np.ndarray], new_articles: int):
        self.unchanged = unchanged
        self.deleted = deleted  # segment position -> local rows
        self.new_articles = new_articles  # (those written again for new metadata included)

    @property
    def deleted_rows(self) -> int:
        return int(sum(len(rows) for rows in self.deleted.values()))


def _segments_of(previous) -> list:
    return previous.segments if isinstance(previous, SegmentedIndex) else [previous]


def live_rows(previous, doc_ids: list[str]) -> tuple[dict[str, list[int]], np.ndarray, int]:
    """What a build finds of the corpus `doc_ids` in the live version `previous` (an `Index` or a
    `SegmentedIndex`; None: nothing): the live rows of each doc_id it holds, the live rows of its
    articles no longer in the corpus, and how many such articles. Read from the store's columns
    and its doc_id look-up, without reading a passage or an article record."""
    if previous is None:
        return {}, np.zeros(0, np.int64), 0
    store = previous.store
    numbers = np.asarray(store.columns[:, 0], np.int64)  # each passage's article number
    order = np.argsort(numbers, kind="stable")
    by_number = numbers[order]
    found: dict[str, list[int]] = {}
    seen = np.zeros(store.n_articles, bool)
    for doc_id in doc_ids:
        if doc_id in found:
            continue
        number = store.article_number(doc_id)  # (a tombstoned article is not found)
        if number is None:
            continue
        lo, hi = np.searchsorted(by_number, [number, number + 1])
        found[doc_id] = np.sort(order[lo:hi]).tolist()
        seen[number] = True
    alive = getattr(previous, "alive", None)
    gone = ~seen[numbers] if alive is None else alive & ~seen[numbers]
    gone_rows = np.flatnonzero(gone)
    return found, gone_rows, len(np.unique(numbers[gone_rows]))


def changed_articles(
    previous, files_read: Iterable[tuple[str, list[tuple[str, bytes]]]], old_rows: dict[str, list[int]],
    recorded: dict, current_files: set[str],
) -> set[str]:
    """The live articles (by doc_id) that the corpus now gives with other metadata: the same title
    and text (so the same doc_id) but another date, URL, author, source file or line...

    `files_read`: each corpus file the build's scan read, with the (doc_id, `article_digest`) of
    its articles (`CorpusScan.read_files`); `old_rows`: what `live_rows` found; `recorded`: the
    live version's corpus-files record (`qa.index.corpus_files.read_corpus_files`);
    `current_files`: the sources of the corpus files there now.

    An article is compared with the digest its file's record holds for it, one file at a time
    (nothing held per article of the corpus); one the record does not name (a file moved or not
    recorded) with its stored record, read from the store. An article given twice, by two files,
    counts as changed when either copy changed or its file is gone: written again from the first
    copy, at worst a needless rewrite, never a stale one."""
    from qa.index.corpus_files import recorded_digests
    from qa.ingest.corpus import article_digest

    changed: set[str] = set()
    if previous is None:
        return changed
    for source, articles in files_read:
        before = recorded_digests(recorded.get(source))
        for doc_id, digest in articles:
            if doc_id not in old_rows or doc_id in changed:
                continue
            was = before.get(doc_id)
            if was is None:
                # (a stored record reads back as exactly the article written)
                was = article_digest(previous.article(doc_id).model_dump_json().encode())
            if was != digest:
                changed.add(doc_id)
    # A file gone whose article another file gives too (a copy of the same story): the live article
    # names the gone file, so it is written again from the other.
    for source, record in recorded.items():
        if source not in current_files:
            changed.update(doc_id for _, doc_id, _ in record.articles if doc_id in old_rows)
    return changed


def plan_add(
    previous, doc_ids: list[str], old_rows: dict[str, list[int]], gone_rows: np.ndarray, gone: int, mode: str,
    changed: Iterable[str] = (),
) -> AddPlan | None:
    """An `AddPlan` when this change goes to a new segment, else None (a full build).

    `old_rows`, `gone_rows`, `gone`: what `live_rows` found. `mode`: "auto" (a segment when the
    articles added, changed and removed are under `SEGMENT_SHARE` of the live ones; the segments
    then merge as `qa.index.segments.merge` says), "segment" (always, when there is a previous
    version), "rebuild" (never). `changed`: live articles whose metadata changed
    (`changed_articles`): their rows are tombstoned and they are written again in the segment,
    their passages' vectors reused, so that no add leaves a stale date or source live.
    """
    if previous is None or mode == "rebuild":
        return None
    changed = set(changed)
    unchanged = set(old_rows) - changed
    new = len(set(doc_ids)) - len(unchanged)  # (the changed ones count as new)
    if not new and not gone:
        return None  # only settings changed: the full build rewrites everything
    if mode != "segment":
        share = (new + gone) / max(len(unchanged) + gone, 1)
        if share >= SEGMENT_SHARE:
            return None
    starts = np.cumsum([0] + [len(s) for s in _segments_of(previous)])
    replaced = [row for doc_id in changed for row in old_rows[doc_id]]
    rows = np.sort(np.concatenate([np.asarray(gone_rows, np.int64), np.asarray(replaced, np.int64)]))
    part = np.searchsorted(starts, rows, "right") - 1
    deleted = {int(p): rows[part == p] - starts[p] for p in np.unique(part).tolist()}
    return AddPlan(unchanged, deleted, new)


def _link_tree(source: Path, dest: Path) -> dict[str, list[int]]:
    """Hard-link every file of `source` into `dest` (no byte copied). Returns the new stamps
    (`qa.index.verify`) of the files whose recorded stamp matched before the link: a link changes
    a file's change time only, so those are still the files verified, and need not be hashed again."""
    from qa.index.verify import file_stamp, read_stamps

    recorded = read_stamps(source)
    stamps = {}
    for path in sorted(source.rglob("*")):
        name = path.relative_to(source).as_posix()
        target = dest / name
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if name == STAMPS:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        before = file_stamp(os.stat(path))
        os.link(path, target)
        if recorded.get(name) == before:
            stamps[name] = file_stamp(os.stat(target))
    return stamps


def _sums_of_rows(vectors, rows: np.ndarray, codes: np.ndarray, langs: list[str]) -> LanguageSums:
    """`LanguageSums` of `vectors[rows]` (as float32) by language (`codes` index `langs`)."""
    dim = vectors.shape[1]
    names, parts = [], []
    for code, lang in enumerate(langs):
        mine = rows[codes == code]
        if len(mine):
            names.append(lang)
            parts.append(moment_sums(np.asarray(vectors[mine], np.float32)))
    return LanguageSums.from_parts(names, parts, None, dim=dim)


def deleted_sums_of(segment, rows: np.ndarray) -> tuple[LanguageSums, LanguageSums]:
    """The passage and sentence sums of the tombstoned `rows` of `segment` (an `Index`): their
    passages, and every sentence of their articles (a removed article goes whole)."""
    langs = segment.store.langs
    codes = np.asarray(segment.store.lang_codes[rows], np.int64)
    passages = _sums_of_rows(segment.passage_vectors, rows, codes, langs)
    articles = np.unique(np.asarray(segment.store.columns[rows, 0], np.int64))
    sentences = np.flatnonzero(np.isin(np.asarray(segment.sentences[:, 0], np.int64), articles))
    article_codes = np.array([langs.index(segment.store.article_at(int(a)).lang) for a in articles], np.int64)
    by_article = dict(zip(articles.tolist(), article_codes.tolist()))
    sentence_codes = np.array([by_article[int(a)] for a in segment.sentences[sentences, 0]], np.int64)
    return passages, _sums_of_rows(segment.sentence_vectors, sentences, sentence_codes, langs)


def _add(a: LanguageSums | None, b: LanguageSums) -> LanguageSums:
    return b if a is None else merge_sums(a, b)


def add_segment(
    building: Path, previous, plan: AddPlan, write_segment, fingerprint: str | None = None,
    group_threshold: float | None = None,
) -> str:
    """Make the new version in `building` (a `.building-*` folder): the previous version's
    segments hard-linked, the new segment written by `write_segment(folder)` (None: nothing
    added, only tombstones), the tombstones and their sums, then live (`CURRENT` swapped).
    `fingerprint`: the manifest's corpus fingerprint (`qa.index.build.corpus_fingerprint` of
    every live article; without it, the last segment's). `group_threshold`: the new passages'
    translations among the live ones are found (`qa.index.segments.groups`; None: only the
    previous version's links are kept). Returns the version's name. The caller holds the build
    lock."""
    seg_root = building / SEGMENT_DIR
    seg_root.mkdir()
    old = _segments_of(previous)
    listing: list[dict] = []
    old_tombstones = previous.tombstones if isinstance(previous, SegmentedIndex) else [np.zeros(0, np.int64)]
    # The sums of every row tombstoned so far (the previous version's), to which this add's are added.
    deleted_sums, deleted_sentence_sums = (
        read_sums_file(previous.path / name) if isinstance(previous, SegmentedIndex) and (previous.path / name).is_file()
        else None
        for name in (DELETED_SUMS, DELETED_SENTENCE_SUMS)
    )
    for position, segment in enumerate(old):
        dead = np.asarray(old_tombstones[position], np.int64)
        fresh = plan.deleted.get(position, np.zeros(0, np.int64))
        if len(fresh):
            passage_sums, sentence_sums = deleted_sums_of(segment, fresh)
            deleted_sums = _add(deleted_sums, passage_sums)
            deleted_sentence_sums = _add(deleted_sentence_sums, sentence_sums)
            dead = np.union1d(dead, fresh)
        listing.append(link_segment(seg_root, segment, dead))
    new_folder = write_new_segment(building, write_segment, listing) if write_segment is not None else None
    links = _previous_links(previous)
    if new_folder is not None and group_threshold is not None:
        links = np.concatenate([links, _new_links(building, previous, plan, new_folder, group_threshold)])
    return finish_segmented(
        building, listing, [e["name"] for e in listing[: len(old)]], (deleted_sums, deleted_sentence_sums), links,
        fingerprint, _dead_articles(previous, plan),
    )


def link_segment(seg_root: Path, segment, dead: np.ndarray) -> dict:
    """Hard-link the folder of `segment` (an `Index`) into `seg_root` (no byte copied, its
    verified stamps kept), with its tombstones `dead` (local rows); returns its listing entry."""
    from qa.index.verify import record_stamps

    name = segment.path.name
    stamps = _link_tree(segment.path, seg_root / name)
    record_stamps(seg_root / name, stamps)
    if len(dead):
        write_file(seg_root / f"{name}.deleted.npy", np.asarray(dead, np.int64))
    return _entry(name, segment, len(dead))


def write_new_segment(building: Path, write_segment, listing: list[dict]) -> Path:
    """Write a segment with `write_segment(folder)` (which returns the version name it wrote in
    `folder`), move it into `building`'s segments and append its entry to `listing`. Returns
    its folder."""
    seg_root = building / SEGMENT_DIR
    scratch = building / ".segment"
    scratch.mkdir()
    name = write_segment(scratch)
    (scratch / name).rename(seg_root / name)
    shutil.rmtree(scratch)
    with open(seg_root / name / MANIFEST, "rb") as handle:
        seg_manifest = Manifest.model_validate_json(handle.read())
    listing.append({"name": name, "passages": seg_manifest.corpus.passages,
                    "articles": seg_manifest.corpus.articles, "deleted": 0})
    return seg_root / name


def finish_segmented(
    building: Path, listing: list[dict], linked: list[str], deleted: tuple[LanguageSums | None, LanguageSums | None],
    links: np.ndarray, fingerprint: str | None, dead_articles: Counter[str],
) -> str:
    """Complete the segmented version in `building` whose segments (`listing`; `linked`: the
    names of those hard-linked from an older version) are in place: the tombstoned rows'
    passage and sentence sums (`deleted`, None: none), the translation `links` across segments,
    the segment list, the manifest (`fingerprint`: the corpus's, else the last segment's;
    `dead_articles`: the tombstoned articles by language), then live (`CURRENT` swapped). Returns the version."""
    from qa.index.verify import file_checksum, write_stamps
    from qa.index.write import publish

    index_dir = building.parent
    version = building.name.removeprefix(".building-")
    seg_root = building / SEGMENT_DIR
    for name, sums in ((DELETED_SUMS, deleted[0]), (DELETED_SENTENCE_SUMS, deleted[1])):
        if sums is not None and len(sums.langs):
            with (building / name).open("wb") as handle:
                np.savez(handle, **sums.to_arrays())
    if len(links):
        write_file(building / GROUP_LINKS, np.asarray(links, np.int64))
    write_file(building / SEGMENTS, json.dumps({"segments": listing}, indent=2).encode())
    top = [SEGMENTS, DELETED_SUMS, DELETED_SENTENCE_SUMS, GROUP_LINKS] + [f"{SEGMENT_DIR}/{e['name']}.deleted.npy" for e in listing]
    top = [name for name in top if (building / name).is_file()]
    last = read_manifest(seg_root / listing[-1]["name"])
    manifest = last.model_copy(update={
        "corpus": last.corpus.model_copy(update={
            "fingerprint": fingerprint or last.corpus.fingerprint,
            "articles": sum(e["articles"] for e in listing) - sum(dead_articles.values()),
            "passages": sum(e["passages"] - e["deleted"] for e in listing),
            "languages": _live_languages(listing, seg_root, dead_articles),
        }),
        "index": last.index.model_copy(update={
            "type": "segmented", "ntotal": sum(e["passages"] for e in listing), "languages": {},
        }),
        "files": {name: (building / name).stat().st_size for name in top},
        "checksums": {name: file_checksum(building / name) for name in top},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    write_file(building / MANIFEST, manifest.model_dump_json(indent=2).encode())
    write_stamps(building, top)
    publish(building, [seg_root])
    # Removing an older version unlinks these files' other names, which moves their change time
    # again: their stamps are refreshed, so that the next load does not hash them all again.
    for name in linked:
        _refresh_stamps(index_dir / version / SEGMENT_DIR / name)
    return version


def _previous_links(previous) -> np.ndarray:
    path = previous.path / GROUP_LINKS
    if isinstance(previous, SegmentedIndex) and path.is_file():
        return np.load(path).reshape(-1, 2)
    return np.zeros((0, 2), np.int64)


def _new_links(building: Path, previous, plan: AddPlan, folder: Path, threshold: float) -> np.ndarray:
    """The translation links of the new segment in `folder` among every live passage of the new
    version (`find_links`), its vectors centred by the new version's statistics (the segments'
    sums merged, minus the tombstoned rows', as a load computes them)."""
    from qa.index.load import MAPPED_FILES, load_version
    from qa.index.verify import check_files

    new = load_version(folder, read_manifest(folder), check_files(folder, read_manifest(folder), keep_open=MAPPED_FILES))
    old = _segments_of(previous)
    stats = merged_stats(building, [*old, new])[0]
    first_new = len(previous)
    alive = np.ones(first_new, bool) if getattr(previous, "alive", None) is None else previous.alive.copy()
    starts = np.cumsum([0] + [len(s) for s in old])
    for position, rows in plan.deleted.items():
        alive[starts[position] + np.asarray(rows, np.int64)] = False
    old_names = [str(x) for x in previous.langs.names]
    rows_by_language: dict[str, np.ndarray] = {}
    for lang in sorted(set(old_names) | set(new.rows_by_language)):
        mine = np.flatnonzero((previous.langs == lang) & alive) if lang in old_names else np.zeros(0, np.int64)
        added = np.asarray(new.rows_by_language.get(lang, np.zeros(0, np.int64)), np.int64) + first_new
        rows = np.concatenate([mine, added]).astype(np.int64)
        if len(rows):  # a language whose every passage was deleted has no statistics left
            rows_by_language[lang] = rows

    def vectors_of(rows: np.ndarray, lang: str) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), stats.means.shape[1]), np.float32)
        is_old = rows < first_new
        if is_old.any():
            out[is_old] = previous.passage_vectors[rows[is_old]]
        if (~is_old).any():
            out[~is_old] = new.passage_vectors[rows[~is_old] - first_new]
        return np.ascontiguousarray(stats.centered(out, np.full(len(rows), stats.langs.index(lang))), np.float32)

    exact = groups.exact_links(len(new), first_new)
    means = {lang: stats.means[stats.langs.index(lang)] for lang in rows_by_language}
    candidates = None if exact else _ann_candidates(old, starts, alive, groups.ANN_CANDIDATES, means)
    started = time.perf_counter()
    links = find_links(vectors_of, rows_by_language, first_new, threshold, candidates)
    log.info("The new segment's %d passages: %d translation links with the %d live ones (%s, %.1f s)",
             len(new), len(links), first_new, "exact" if exact else "approximate candidates",
             time.perf_counter() - started)
    return links


def _ann_candidates(segments: list, starts: np.ndarray, alive: np.ndarray, k: int, means: dict[str, np.ndarray]):
    """`find_links`'s `candidates`: the `k` best live rows of a language in each of `segments`
    (the previous version's, rows from `starts`) by its own search (`Index.language_searches`),
    global rows, -1 where none (a tombstoned row found is dropped, not replaced).

    The searches hold the raw vectors, the links compare centred, re-normalized ones: the query
    (a centred vector) is shifted by the language's mean (`means`), which favours the passages
    near it, whose centred norm is small and cosine thus larger (to first order). An IVF index
    visits its `nprobe` best lists, not only those within its gap: the gap is tuned on questions,
    and a passage's centred vector is not one. Both measured in benchmarks/README.md, "Segments"."""
    import faiss

    from qa.index.ann import ProbedIVF

    searches = [segment.language_searches() for segment in segments]

    def candidates(queries: np.ndarray, lang: str) -> np.ndarray:
        queries = np.ascontiguousarray(queries + means[lang], np.float32)
        parts = [np.full((len(queries), 0), -1, np.int64)]
        for start, by_lang in zip(starts.tolist(), searches):
            if lang in by_lang:
                search, rows = by_lang[lang]
                want = min(k, len(rows))
                if isinstance(search, ProbedIVF):
                    _, ids = search.index.search(queries, want, params=faiss.SearchParametersIVF(nprobe=search.nprobe))
                else:
                    _, ids = search.search(queries, want)
                found = np.where(ids >= 0, np.asarray(rows, np.int64)[np.maximum(ids, 0)] + start, -1)
                found[found >= 0] = np.where(alive[found[found >= 0]], found[found >= 0], -1)
                parts.append(found)
        return np.concatenate(parts, axis=1)

    return candidates


def _refresh_stamps(folder: Path) -> None:
    """Re-record the stamps (`qa.index.verify`) of the files of a hard-linked segment whose
    inode, size and modification time are still those recorded: only their change time moved,
    by the links added and removed while the build held the lock."""
    from qa.index.verify import file_stamp, read_stamps, record_stamps

    recorded = read_stamps(folder)
    fresh = {}
    for name, stamp in recorded.items():
        try:
            now = file_stamp(os.stat(folder / name))
        except OSError:
            continue
        if list(now[:3]) == list(stamp[:3]):
            fresh[name] = now
    if fresh:
        record_stamps(folder, fresh)


def _entry(name: str, segment, deleted: int) -> dict:
    return {"name": name, "passages": len(segment), "articles": segment.store.n_articles, "deleted": int(deleted)}


def _dead_articles(previous, plan: AddPlan) -> Counter[str]:
    """Articles tombstoned in the new version (all of them, earlier adds' included), by language."""
    tombstones = previous.tombstones if isinstance(previous, SegmentedIndex) else [np.zeros(0, np.int64)]
    dead: Counter[str] = Counter()
    for position, segment in enumerate(_segments_of(previous)):
        rows = np.union1d(np.asarray(tombstones[position], np.int64), plan.deleted.get(position, np.zeros(0, np.int64)))
        if len(rows):
            dead += articles_by_language(segment, np.unique(np.asarray(segment.store.columns[rows, 0])))
    return dead


def articles_by_language(segment, numbers: np.ndarray) -> Counter[str]:
    """How many of `segment`'s articles `numbers` are in each language (from their records: the
    tombstoned ones, a few of the many)."""
    return Counter(segment.store.article_at(int(n)).lang for n in numbers)


def _live_languages(listing: list[dict], seg_root: Path, dead: Counter[str]) -> dict[str, int]:
    """Live articles per language over the segments: each segment's counts less the `dead` ones."""
    counts: Counter[str] = Counter()
    for entry in listing:
        counts.update(read_manifest(seg_root / entry["name"]).corpus.languages)
    counts.subtract(dead)
    return {lang: n for lang, n in sorted(counts.items()) if n > 0}
