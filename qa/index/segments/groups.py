"""Translation groups across segments: the links an add finds between its passages and the live ones.

A segment's own groups (`qa.rank.translation_groups`, written by the ordinary writer) link only
its own passages, with its own statistics. At an add, `find_links` links each new passage to its
translations among every live passage, as a full build would: two passages of different
languages are linked when each is the other's nearest neighbour in its language among all live
passages and their cosine (centred by the new version's statistics) is at least the threshold.
The pairs (global rows) are kept in `group_links.npy` beside `segments.json`, an add's appended
to the previous version's; a load merges the groups they join (`link_groups`). Links between two
older passages are not revisited: an older pair that a new passage would break stays linked until
the merge (the next full build groups everything again).

Cost: each new passage is compared with the live passages of the other languages, and each old
passage it finds with the new passage's language. While new x live is at most `LINK_BUDGET`,
exactly, with every live passage (a block at a time). Past it, the old passages compared are the
candidates that the live version's own per-language searches (`qa.index.ann`: IVF-SQ8 for a large
language, exact 8-bit for a small one) return for the centred vector, `ANN_CANDIDATES` of them in
each segment, re-scored exactly; the new passages are still compared exactly (there are few). The
same mutual-nearest-neighbour rule decides; a link the approximate search misses is a
translation left in its own group until the merge.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "ANN_CANDIDATES", "GROUP_LINKS", "LINK_BUDGET", "LinkedGroups", "LinkedMembers", "exact_links", "find_links",
    "link_groups",
]

log = logging.getLogger(__name__)

GROUP_LINKS = "group_links.npy"
_BLOCK = 65536
# The exact comparison costs about new x live dot products (measured: 2,000 new against 200,000
# live, d = 384, 14 s on 2 shared cores): past this many, the old passages compared come from the
# per-language approximate searches instead (see the module's docstring and benchmarks/README.md,
# "Segments"). Below it the links are exact, as a full build's.
LINK_BUDGET = 500_000_000
# Candidates asked of each segment's search of a language (re-scored exactly): the searches rank
# by the inner product with the raw passage vectors, the links by the cosine of centred ones, whose
# norms before re-normalizing vary (0.33 to 0.55). 2,000 new against 200,000 live (8 languages):
# 10 candidates found 244 of the 310 exact links; 50, with the query shifted and the IVF lists
# fixed (`qa.index.segments.add._ann_candidates`), all 310 and no other, in 7.6 s against 35.7 s
# exactly (benchmarks/README.md, "Segments").
ANN_CANDIDATES = 50


def exact_links(new: int, live: int) -> bool:
    """Whether an add of `new` passages to `live` ones compares them with every live passage
    (else with the candidates of the per-language approximate searches)."""
    return new * live <= LINK_BUDGET


def _best(queries: np.ndarray, base_rows: np.ndarray, vectors_of) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best inner product over the vectors of `base_rows` (read a block at a time)
    and the row it is at (-1 when there are none); the first of equal scores, as FAISS keeps."""
    import faiss

    best = np.full(len(queries), -np.inf, np.float32)
    at = np.full(len(queries), -1, np.int64)
    if not len(queries):
        return best, at
    for start in range(0, len(base_rows), _BLOCK):
        rows = base_rows[start : start + _BLOCK]
        sims, where = faiss.knn(queries, vectors_of(rows), 1, metric=faiss.METRIC_INNER_PRODUCT)
        better = sims[:, 0] > best
        best[better] = sims[better, 0]
        at[better] = rows[where[better, 0]]
    return best, at


def _best_of_candidates(queries: np.ndarray, found: np.ndarray, vectors_of) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best inner product over its candidate rows `found` ((n, c), -1 for none) and
    the row it is at (-1 when there are none); the smallest row of equal scores, as `_best`."""
    best = np.full(len(queries), -np.inf, np.float32)
    at = np.full(len(queries), -1, np.int64)
    for start in range(0, len(queries), 4096):  # (bounds the gathered (block, c, d) vectors)
        rows = found[start : start + 4096]
        if not rows.size:
            continue
        unique, inverse = np.unique(rows, return_inverse=True)
        inverse = inverse.reshape(rows.shape)
        valid = unique >= 0
        vectors = np.zeros((len(unique), queries.shape[1]), np.float32)
        if valid.any():
            vectors[valid] = vectors_of(unique[valid])
        sims = np.einsum("nd,ncd->nc", queries[start : start + 4096], vectors[inverse])
        sims[rows < 0] = -np.inf
        first = np.lexsort((rows, -sims))[:, 0]  # (per query) the best score, then the smallest row
        sims_best = np.take_along_axis(sims, first[:, None], axis=1)[:, 0]
        rows_best = np.take_along_axis(rows, first[:, None], axis=1)[:, 0]
        keep = sims_best > -np.inf
        best[start : start + 4096] = np.where(keep, sims_best, -np.inf)
        at[start : start + 4096] = np.where(keep, rows_best, -1)
    return best, at


def find_links(
    vectors_of, rows_by_language: dict[str, np.ndarray], first_new: int, threshold: float, candidates=None
) -> np.ndarray:
    """The translation links (pairs of global rows, (m, 2) int64) of the passages numbered from
    `first_new` on, among all the live rows in `rows_by_language` (language -> sorted global
    rows, the new ones included). `vectors_of(rows, lang)`: the centred float32 vectors of rows
    of that language. `candidates(queries, lang)`: the live old rows of `lang` ((n, c), -1 for
    none) worth comparing with each centred query vector (the approximate searches'); None:
    every live row is compared (exact)."""
    langs = sorted(lang for lang, rows in rows_by_language.items() if len(rows))
    new_of = {lang: rows_by_language[lang][rows_by_language[lang] >= first_new] for lang in langs}
    pairs: set[tuple[int, int]] = set()
    for i, a in enumerate(langs):
        for b in langs[i + 1 :]:
            if len(new_of[a]) or len(new_of[b]):
                pairs |= _links_between(vectors_of, (a, rows_by_language[a], new_of[a]),
                                        (b, rows_by_language[b], new_of[b]), threshold, candidates, first_new)
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


def _nearest_in(queries: np.ndarray, other: np.ndarray, other_lang: str, vectors_of, candidates,
                first_new: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best row (and score) among the rows `other` of `other_lang`: every one of
    them (exact), or with `candidates`, those it returns among the old rows and every new one."""
    of_other = lambda found: vectors_of(found, other_lang)
    if candidates is None:
        return _best(queries, other, of_other)
    old_best, old_at = _best_of_candidates(queries, candidates(queries, other_lang), of_other)
    new_best, new_at = _best(queries, other[other >= first_new], of_other)
    newer = new_best > old_best  # (an old row wins a tie: it comes first, as in the exact search)
    return np.where(newer, new_best, old_best), np.where(newer, new_at, old_at)


def _links_between(vectors_of, side_a: tuple, side_b: tuple, threshold: float, candidates=None,
                   first_new: int = 0) -> set[tuple[int, int]]:
    """The mutual nearest neighbours of two languages ((lang, all rows, new rows) each) with at
    least one new passage (rows from `first_new` on; `candidates`: see `find_links`)."""
    (a, all_a, new_a), (b, all_b, new_b) = side_a, side_b
    best: dict[int, tuple[float, int]] = {}  # row -> (its best score, that row) in the other language

    def nearest(rows: np.ndarray, lang: str, other: np.ndarray, other_lang: str) -> None:
        rows = np.array(sorted({r for r in rows.tolist() if r not in best}), np.int64)
        if len(rows):
            sims, at = _nearest_in(vectors_of(rows, lang), other, other_lang, vectors_of, candidates, first_new)
            best.update(zip(rows.tolist(), zip(sims.tolist(), at.tolist())))

    nearest(new_a, a, all_b, b)
    nearest(new_b, b, all_a, a)
    # The old passages the new ones found: their own nearest among every passage of the new one's language.
    nearest(np.array([best[r][1] for r in new_a.tolist() if best[r][1] >= 0], np.int64), b, all_a, a)
    nearest(np.array([best[r][1] for r in new_b.tolist() if best[r][1] >= 0], np.int64), a, all_b, b)
    links = set()
    for row in [*new_a.tolist(), *new_b.tolist()]:
        score, other = best[row]
        if other >= 0 and score >= threshold and best[other][1] == row:
            links.add((min(row, other), max(row, other)))
    return links


class LinkedGroups:
    """A group column (`groups[row]`, `groups[rows]`, `np.asarray(groups)`) with the groups that
    links join read as one (the smallest id of each joined set)."""

    def __init__(self, groups, remap: dict[int, int]):
        self._groups, self._remap = groups, remap
        self._keys = np.array(sorted(remap), np.int64)
        self._values = np.array([remap[k] for k in self._keys.tolist()], np.int64)

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),)

    def _map(self, values: np.ndarray) -> np.ndarray:
        values = np.array(values, np.int64)
        if len(self._keys) and values.size:
            at = np.clip(np.searchsorted(self._keys, values), 0, len(self._keys) - 1)
            hit = self._keys[at] == values
            values[hit] = self._values[at[hit]]
        return values

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            value = int(self._groups[rows])
            return self._remap.get(value, value)
        return self._map(np.asarray(self._groups[rows]))

    def __array__(self, dtype=None, copy=None):
        values = self._map(np.asarray(self._groups))
        return values if dtype is None else values.astype(dtype)


class LinkedMembers:
    """`members.get(group, default)` with the joined groups' members (live rows) together."""

    def __init__(self, members, joined: dict[int, list[int]]):
        self._members, self._joined = members, joined

    def get(self, group: int, default: list[int] | None = None) -> list[int] | None:
        found = self._joined.get(int(group))
        return found if found is not None else self._members.get(group, default)


def link_groups(groups, members, links: np.ndarray, alive: np.ndarray | None) -> tuple[LinkedGroups, LinkedMembers]:
    """`groups` and `members` (an index's) with the groups joined by `links` (pairs of rows)."""
    links = np.asarray(links, np.int64).reshape(-1, 2)
    parent: dict[int, int] = {}

    def find(g: int) -> int:
        parent.setdefault(g, g)
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    rows_of: dict[int, set[int]] = {}  # group -> rows known in it (a group of one has no members entry)
    for r1, r2 in links.tolist():
        g1, g2 = int(groups[r1]), int(groups[r2])
        rows_of.setdefault(g1, set()).add(r1)
        rows_of.setdefault(g2, set()).add(r2)
        a, b = find(g1), find(g2)
        if a != b:
            parent[max(a, b)] = min(a, b)
    components: dict[int, list[int]] = {}
    for g in parent:
        components.setdefault(find(g), []).append(g)
    remap, joined = {}, {}
    for root, gs in components.items():
        rows: set[int] = set()
        for g in gs:
            remap[g] = root
            rows.update(members.get(g, None) or rows_of.get(g, ()))
        joined[root] = sorted(r for r in rows if alive is None or alive[r])
    return LinkedGroups(groups, remap), LinkedMembers(members, joined)

