"""`qa index` reads the corpus as a stream: the folder is read once into a spool (`scan_corpus`),
articles and passages come back one at a time, and vectors are embedded and compared a block at
a time. The index is the same whatever the block size, and the scan is `load_corpus`'s corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder

import qa.index.embedding
from qa.config import Settings
from qa.index.build import build_index
from qa.index.format import current_version
from qa.ingest import load_corpus
from qa.ingest.corpus import scan_corpus
from qa.rank import translation_groups

TEXTS = {
    "en": "The harbour crane collapsed on Monday. Engineers inspected the damage to the quay. "
          "The port will reopen next week, said the harbour master. Ships wait outside the port.",
    "de": "Der Hafenkran ist am Montag eingestürzt. Ingenieure prüften den Schaden am Kai. "
          "Der Hafen öffnet nächste Woche wieder, sagte der Hafenmeister. Schiffe warten draußen.",
    "fr": "La grue du port s'est effondrée lundi. Des ingénieurs ont examiné les dégâts sur le quai. "
          "Le port rouvrira la semaine prochaine, a dit le capitaine. Les navires attendent au large.",
}


def _write_corpus(folder: Path, n: int) -> None:
    """n articles in three languages, in nested folders whose walk order is not their sort order
    ("a/..." is walked before "a-b...", which sorts first), a .jsonl with a bad line, a duplicate
    and an unsupported file."""
    langs = sorted(TEXTS)
    for i in range(n):
        lang = langs[i % 3]
        body = " ".join([TEXTS[lang]] * (1 + i % 4)) + f" ({i})"
        sub = folder / ("a" if i % 2 else "a-b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{lang}-{i:03d}.txt").write_text(f"Report {i}\n\n{body}\n", encoding="utf-8")
    lines = [json.dumps({"title": "Quay", "text": TEXTS["en"] + " (jsonl)", "lang": "en"}), "{not json",
             json.dumps({"title": "Kai", "text": TEXTS["de"] + " (jsonl)", "lang": "de"})]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "copy.txt").write_text((folder / "a" / "en-001.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "image.bin").write_bytes(b"\x00\x01")


def test_the_scan_is_load_corpus_one_article_at_a_time(tmp_path: Path):
    _write_corpus(tmp_path, 9)
    articles, skipped = load_corpus(tmp_path)
    with scan_corpus(tmp_path, spool_dir=tmp_path) as scan:
        assert list(scan) == articles and scan.skipped == skipped
        assert len(scan) == len(articles) == 11 and scan.doc_ids == [a.doc_id for a in articles]
        ordered = sorted(articles, key=lambda a: (a.doc_id, a.source))
        assert list(scan.json_by_id()) == [a.model_dump_json().encode() for a in ordered]
        assert list(scan) == articles  # read again, from the spool
    reasons = {skip.source: skip.reason for skip in skipped}
    assert "duplicate" in reasons["copy.txt"] and "a/en-001.txt" in reasons["copy.txt"]
    assert "a.jsonl#2" in reasons and "image.bin" in reasons
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]  # the spool has no name


def _files(index_dir: Path) -> dict[str, bytes]:
    version = index_dir / current_version(index_dir)
    out = {p.relative_to(version).as_posix(): p.read_bytes() for p in sorted(version.rglob("*")) if p.is_file()}
    manifest = json.loads(out.pop("manifest.json"))
    manifest.pop("created_at")
    out["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    out.pop("verified.json")  # file stamps (inodes, times): differ between any two builds
    out.pop("corpus_files.npz")  # the corpus files as each scan saw them (times): qa.index.corpus_files
    return out


@pytest.mark.parametrize("block", [1, 3])
def test_the_index_does_not_depend_on_the_block_size(tmp_path: Path, monkeypatch, block: int):
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, 12)
    whole = Settings(corpus_dir=corpus, index_dir=tmp_path / "whole", chunk_tokens=60)
    report = build_index(corpus, settings=whole, embedder=FakeEmbedder(dim=16))
    assert report.passages > report.articles == 14 and report.sentences > report.passages
    monkeypatch.setattr(qa.index.embedding, "EMBED_BLOCK", block)
    blocked = Settings(corpus_dir=corpus, index_dir=tmp_path / "blocked", chunk_tokens=60)
    again = build_index(corpus, settings=blocked, embedder=FakeEmbedder(dim=16))
    assert again.model_dump(exclude={"index_dir", "version", "seconds"}) == report.model_dump(
        exclude={"index_dir", "version", "seconds"}
    )
    assert _files(blocked.index_dir) == _files(whole.index_dir)
    # An incremental build, a block at a time: one article changed, one added, one removed.
    new = [TEXTS["de"] + " Geändert.", TEXTS["fr"] + " (100)"]
    (corpus / "a" / "de-003.txt").write_text(f"Report 3\n\n{new[0]}\n", encoding="utf-8")
    (corpus / "a-b" / "fr-100.txt").write_text(f"Report 100\n\n{new[1]}\n", encoding="utf-8")
    (corpus / "a-b" / "en-004.txt").unlink()
    embedder = FakeEmbedder(dim=16)
    update = build_index(corpus, settings=blocked, embedder=embedder)
    assert update.removed_articles == 2 and update.reused > 0 and update.embedded >= 2
    assert embedder.embedded and all(any(t in text for text in new) for t in embedder.embedded)
    monkeypatch.setattr(qa.index.embedding, "EMBED_BLOCK", 65536)
    build_index(corpus, settings=whole, embedder=FakeEmbedder(dim=16))  # the same update, one block
    assert _files(blocked.index_dir) == _files(whole.index_dir)


def test_translation_groups_do_not_depend_on_the_block(tmp_path: Path):
    rng = np.random.default_rng(3)
    k, dim = 4106, 24  # two blocks of 4,096 per language, the last one too short to search alone
    base = rng.standard_normal((k, dim)).astype(np.float32)
    vectors = np.concatenate([base + 0.4 * rng.standard_normal((k, dim)).astype(np.float32) for _ in range(3)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    langs = np.repeat(["de", "en", "fr"], k)
    order = rng.permutation(len(vectors))
    vectors, langs = vectors[order], langs[order]
    whole = translation_groups(vectors, langs, 0.5)
    assert 0 < len(np.unique(whole)) < len(vectors)  # some passages are grouped, not all
    mapped = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=vectors.shape)
    mapped[:] = vectors
    blocked = translation_groups(mapped, langs, 0.5, rows_of=lambda rows: mapped[rows] * 2, block=4096)
    assert np.array_equal(blocked, whole)  # a scale does not move a neighbour: the same groups
