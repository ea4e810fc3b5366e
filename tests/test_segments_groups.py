"""Translation groups across segments (`qa.index.segments.groups`): a translation added later, as
a segment, is linked to its original in an older segment as one index of the same articles
links them, and the seed questions rank as on that one index. Real model and real FAISS."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.index.build import build_index
from qa.index.format import current_version
from qa.index.load import open_index
from qa.index.segments import SegmentedIndex, groups
from tests.conftest import ROOT
from tests.test_segments import _hits_and_lists

# The German original with two unrelated articles first; its Japanese translation added later.
FIRST = ["de-nadella-koenigsmacher.txt", "fr-employes-openai-vers-microsoft.txt",
         "fr-pourquoi-microsoft-a-besoin-de-sam-altman.txt"]
LATER = "ja-nadella-kingmaker.txt"


def _copy(names: list[str], corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(ROOT / "corpus" / name, corpus / name)


def _translations(settings: Settings, lang: str) -> set[tuple]:
    """(passage start, translation's language, article, start) of each passage in `lang` and each
    member of its translation group in another language."""
    index = open_index(settings.index_dir)
    alive = getattr(index, "alive", None)  # (a segmented index with tombstones)
    found = set()
    for row in range(len(index)):
        if index.langs[row] == lang and (alive is None or alive[row]):
            found |= {
                (index.chunks[row].start, index.langs[m], index.chunks[m].doc_id, index.chunks[m].start)
                for m in index.group_members(row) if index.langs[m] != lang
            }
    return found


@pytest.fixture(scope="module")
def one_and_segmented(tmp_path_factory) -> tuple[Settings, Settings]:
    root = tmp_path_factory.mktemp("groups")
    one = Settings(corpus_dir=root / "one-corpus", index_dir=root / "one")
    _copy([*FIRST, LATER], one.corpus_dir)
    build_index(settings=one)
    segmented = Settings(corpus_dir=root / "corpus", index_dir=root / "segmented")
    _copy(FIRST, segmented.corpus_dir)
    build_index(settings=segmented)
    shutil.copytree(segmented.index_dir, root / "before-add")  # (for the approximate candidates' test)
    _copy([LATER], segmented.corpus_dir)
    build_index(settings=segmented, segments="segment")
    return one, segmented


@pytest.mark.slow
def test_a_translation_added_later_is_grouped_with_its_original(one_and_segmented):
    one, segmented = one_and_segmented
    assert isinstance(open_index(segmented.index_dir), SegmentedIndex)
    expected = _translations(one, "ja")
    assert expected and any(lang == "de" for _, lang, _, _ in expected)
    assert _translations(segmented, "ja") == expected  # measured: 7 of 7 (0 before the links)


@pytest.mark.slow
def test_the_seed_questions_rank_as_on_one_index(one_and_segmented, seed_facts):
    one, segmented = one_and_segmented
    hits, lists = _hits_and_lists(segmented, seed_facts)
    one_hits, one_lists = _hits_and_lists(one, seed_facts)
    assert hits == one_hits
    # Measured: 45 of 46 top-5 lists identical (30 while groups stayed within a segment; the one
    # left differs by the French articles' groups, found with the first segment's statistics).
    assert sum(a == b for a, b in zip(lists, one_lists)) >= 44


@pytest.mark.slow
def test_links_are_kept_by_the_next_add_and_drop_removed_passages(one_and_segmented, tmp_path):
    segmented = one_and_segmented[1]
    settings = segmented.model_copy(update={"index_dir": tmp_path / "index", "corpus_dir": tmp_path / "corpus"})
    shutil.copytree(segmented.index_dir, settings.index_dir)
    shutil.copytree(segmented.corpus_dir, settings.corpus_dir)
    before = _translations(settings, "ja")
    _copy(["fr-nadella-faiseur-de-rois.txt"], settings.corpus_dir)
    build_index(settings=settings, segments="segment")  # a third segment: the French translation
    after = _translations(settings, "ja")
    assert {t for t in before if t[1] == "de"} <= after and any(lang == "fr" for _, lang, _, _ in after)
    (settings.corpus_dir / LATER).unlink()  # the Japanese article removed: tombstoned
    build_index(settings=settings, segments="segment")
    assert not _translations(settings, "ja") and not any(lang == "ja" for _, lang, _, _ in _translations(settings, "de"))


def _links(settings: Settings):
    index_dir = settings.index_dir
    return np.load(index_dir / current_version(index_dir) / groups.GROUP_LINKS).tolist()


@pytest.mark.slow
def test_candidates_from_the_approximate_searches_give_the_exact_links(one_and_segmented, tmp_path, monkeypatch,
                                                                        caplog):
    """The same add with the old passages compared through each segment's own per-language search
    (what an add to a large index does past `LINK_BUDGET`) finds the same links as the exact one."""
    segmented = one_and_segmented[1]
    settings = segmented.model_copy(update={"index_dir": tmp_path / "index", "corpus_dir": tmp_path / "corpus"})
    shutil.copytree(segmented.index_dir.parent / "before-add", settings.index_dir)
    _copy([*FIRST, LATER], settings.corpus_dir)
    monkeypatch.setattr(groups, "LINK_BUDGET", -1)
    with caplog.at_level(logging.INFO, logger="qa.index.segments.add"):
        build_index(settings=settings, segments="segment")
    assert any("approximate candidates" in r.getMessage() for r in caplog.records)
    exact = _links(segmented)
    assert len(exact) >= 7 and _links(settings) == exact
    assert _translations(settings, "ja") == _translations(segmented, "ja")
