"""Passage vectors stored as int8 codes with a scale per row (`qa.index.ann.Int8Rows`, index
format 6): written by the real writer, read back within half a quantization step of the float32
vectors given, scored in place (`qa.kernels.int8_row_dots`) as the decoded rows are, and an
index of the previous format (float16 vectors) refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.errors import IndexMismatchError
from qa.index.ann import Int8Rows, quantize_rows
from qa.index.build import build_index, write_index
from qa.index.format import FORMAT_VERSION, VECTOR_SCALES, VECTORS, current_version
from qa.index.load import open_index
from qa.kernels import int8_row_dots, row_dots
from qa.models import Article, Chunk
from tests.fakes import FakeEmbedder

DIM = 48


def _unit_rows(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors[::7, 5] += 4.0  # rows with one large component: the scale follows each row's own maximum
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _bound(scales: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The most a dot product can move: each element within half a step (scale / 2) of its
    float32 value, so the sum within scale · |q|₁ / 2 (plus float32 rounding)."""
    return scales * np.abs(query).sum() / 2 + 1e-6


def test_rows_read_back_within_half_a_step_and_dots_within_the_bound():
    vectors = _unit_rows(500)
    codes, scales = quantize_rows(vectors, block=64)  # several blocks
    rows = Int8Rows(codes, scales)
    assert codes.dtype == np.int8 and scales.dtype == np.float32 and rows.nbytes == 500 * DIM + 500 * 4
    assert np.abs(codes).max(axis=1).tolist() == [127] * 500  # each row uses its whole range
    decoded = np.asarray(rows)
    assert decoded.dtype == np.float32 and decoded.shape == vectors.shape
    assert np.all(np.abs(decoded - vectors) <= scales[:, None] / 2 + 1e-7)
    assert np.array_equal(rows[[3, 1]], decoded[[3, 1]]) and np.array_equal(rows[4], decoded[4])
    query = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    picked = np.array([499, 0, 7, 7, 250], np.int64)  # any order, repeats allowed
    dots = rows.dots(picked, query)
    assert dots.dtype == np.float32
    # In place, the same floats as the decoded rows' `row_dots` (what a backend holding them computes).
    assert np.array_equal(dots, row_dots(decoded, picked, query))
    assert np.allclose(dots, decoded[picked] @ query, rtol=0, atol=1e-5)
    assert np.all(np.abs(dots - vectors[picked] @ query) <= _bound(scales[picked], query))
    assert len(rows.dots(np.zeros(0, np.int64), query)) == 0


def test_the_kernel_reads_memory_mapped_codes_and_int32_rows(tmp_path: Path):
    vectors = _unit_rows(200)
    stored = np.lib.format.open_memmap(tmp_path / "codes.npy", mode="w+", dtype=np.int8, shape=vectors.shape)
    scales = quantize_rows(vectors, out=stored)[1]
    stored.flush()
    codes = np.load(tmp_path / "codes.npy", mmap_mode="r")
    query = vectors[11] - 0.5 * vectors[12]
    picked = np.arange(200, dtype=np.int32)[::-3]
    expected = (codes[picked].astype(np.float32) * scales[picked, None]) @ query
    assert np.allclose(Int8Rows(codes, scales).dots(picked, query), expected, rtol=0, atol=1e-5)
    assert np.allclose(int8_row_dots(codes, scales, picked.astype(np.int64), query), expected, rtol=0, atol=1e-5)


def _write(folder: Path, vectors: np.ndarray) -> Path:
    n = len(vectors)
    articles = [Article(doc_id=f"d{i}", title=f"t{i}", text=f"passage number {i}.", lang="en" if i % 3 else "fr",
                        source=f"s/{i}") for i in range(n)]  # fmt: skip
    chunks = [Chunk(doc_id=a.doc_id, chunk_id=0, text=a.text, start=0, end=len(a.text), n_tokens=4) for a in articles]
    sentences = np.array([(i, 0, len(a.text)) for i, a in enumerate(articles)], np.int64)
    write_index(
        folder, articles, chunks, vectors, sentences, vectors, settings=Settings(index_dir=folder),
        model={"name": "x", "fingerprint": "x", "dim": DIM},
        chunking={"name": "x", "version": 1, "max_tokens": 200, "overlap": 0}, query_means={},
    )  # fmt: skip
    return folder / current_version(folder)


def test_an_index_stores_its_passage_vectors_as_int8_and_scores_them_within_the_bound(tmp_path: Path):
    vectors = _unit_rows(120)
    version = _write(tmp_path / "index", vectors)
    index = open_index(tmp_path / "index")
    assert index.manifest.format_version == FORMAT_VERSION == 6
    codes, scales = np.load(version / VECTORS), np.load(version / VECTOR_SCALES)
    assert codes.dtype == np.int8 and codes.shape == vectors.shape and scales.shape == (len(vectors),)
    assert index.manifest.files[VECTORS] < vectors.nbytes / 3  # a quarter of float32, plus the .npy header
    rows = np.arange(len(vectors))[::-1].copy()
    read = index.passage_vectors_at(rows)
    assert read.dtype == np.float32 and np.array_equal(read, codes[rows].astype(np.float32) * scales[rows, None])
    assert np.all(np.abs(read - vectors[rows]) <= scales[rows, None] / 2 + 1e-7)
    query = vectors[5] + 0.5 * vectors[-1]
    dots = index.passage_vectors.dots(rows, query)
    assert np.allclose(dots, read @ query, rtol=0, atol=1e-5)
    assert np.all(np.abs(dots - vectors[rows] @ query) <= _bound(scales[rows], query))
    # The exact search of a small language reads the same rows: the passage itself comes first.
    scores, found = index.search_language("fr", vectors[3], 1)
    assert found.tolist() == [3] and abs(scores[0] - 1) < 0.01


def test_an_index_of_format_5_asks_for_a_rebuild_and_qa_index_rebuilds_it(tmp_path: Path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = ["Ships were sent to the northern quay after the crane fell.", "Les imkers ont eu une bonne récolte."]
    lines = [json.dumps({"title": f"t{i}", "text": text, "lang": "en" if i == 0 else "fr"}) for i, text in enumerate(texts)]
    (corpus / "news.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "index")
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    version = settings.index_dir / current_version(settings.index_dir)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] = 5  # as written before: float16 vectors, no vector_scales.npy
    (version / "manifest.json").write_text(json.dumps(manifest))
    (version / VECTOR_SCALES).unlink()
    refused = r"index format 5; this version of qa reads format 6\. Rebuild the index with `qa index`"
    with pytest.raises(IndexMismatchError, match=refused):
        open_index(settings.index_dir)
    report = build_index(corpus, settings=settings, embedder=FakeEmbedder())  # what `qa index` runs
    rebuilt = open_index(settings.index_dir)
    assert rebuilt.version != version.name and rebuilt.manifest.format_version == 6
    assert report.embedded == report.passages == len(rebuilt) >= 2  # nothing reused from the old format
