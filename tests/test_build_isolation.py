"""One article cannot break a build: whatever stage fails for it (reading, chunking, counting
tokens, embedding its passages or its sentences), it is left out and named in the summary with
the reason, the others are indexed and searchable, and the previous index stays live until the
new one is complete.

Failures are injected with monkeypatch (a stand-in for the bug or the text nobody foresaw); the
builds use the real model, except the bookkeeping tests at the end, which use tests.fakes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import qa.chunk
import qa.ingest
import qa.ingest.formats
from qa import ask, retrieve
from qa.cli import main
from qa.config import Settings
from qa.embed import LocalEmbedder
from qa.errors import QAError
from qa.index.build import build_index
from qa.index.format import current_version
from qa.index.load import open_index
from tests.fakes import FakeEmbedder
from tests.small_corpus import LIBRARY, WIND

LIBRARY_SENTENCE = "It holds sixty thousand books and a children's reading room."
# The paragraph that used to crash the tokenizer (U+200B, then a FRACTION SLASH U+2044).
NTSC = (
    "NTSC color encoding is used with the System M television signal, which consists of "
    "\u200b30\u20441.001 (approximately 29.97) interlaced frames of video per second. Each frame is "
    "composed of two fields, each consisting of 262.5 scan lines, for a total of 525 scan lines. 486 "
    "scan lines make up the visible raster. The remainder (the vertical blanking interval) allow for "
    "vertical synchronization and retrace. This blanking interval was originally designed to simply "
    "blank the receiver's CRT to allow for the simple analog circuits and slow vertical retrace of "
    "early TV receivers. However, some of these lines may now contain other data such as closed "
    "captioning and vertical interval timecode (VITC). In the complete raster (disregarding half "
    "lines due to interlacing) the even-numbered scan lines (every other line that would be even if "
    "counted in the video signal, e.g. {2, 4, 6, ..., 524}) are drawn in the first field, and the "
    "odd-numbered (every other line that would be odd if counted in the video signal, e.g. {1, 3, 5, "
    "..., 525}) are drawn in the second field, to yield a flicker-free image at the field refresh "
    "frequency of \u200b60\u20441.001 Hz (approximately 59.94 Hz). For comparison, 576i systems such "
    "as PAL-B/G and SECAM use 625 lines (576 visible), and so have a higher vertical resolution, but "
    "a lower temporal resolution of 25 frames or 50 fields per second."
)
TURBINES = "How many homes can the turbines supply?"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "wind.txt").write_text(WIND, encoding="utf-8")
    (folder / "library.txt").write_text(LIBRARY, encoding="utf-8")
    line = json.dumps({"title": "NTSC", "text": NTSC, "lang": "en"})
    (folder / "ntsc.jsonl").write_text(line + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def settings(tmp_path: Path, corpus: Path) -> Settings:
    return Settings(corpus_dir=corpus, index_dir=tmp_path / "index")


def assert_library_left_out(settings: Settings, skipped: dict[str, str], stage: str) -> None:
    """library.txt is named with its title and the reason; the rest is indexed and answers."""
    assert list(skipped) == ["library.txt"], skipped
    reason = skipped["library.txt"]
    assert "'New library for the old town'" in reason and stage in reason, reason
    assert "RuntimeError: injected" in reason and "qa index" in reason and "\n" not in reason
    index = open_index(settings.index_dir)
    assert {a.source for a in index.articles.values()} == {"wind.txt", "ntsc.jsonl#1"}
    # Every stored sentence lies inside a passage of its own article (the table was renumbered).
    articles = list(index.articles.values())
    for doc, start, end in index.sentences.tolist():
        doc_id = articles[doc].doc_id
        assert any(c.doc_id == doc_id and c.start <= start < end <= c.end for c in index.chunks)
    assert retrieve(TURBINES, k=1, settings=settings)[0].source == "wind.txt"
    answer = ask(TURBINES, settings=settings)
    assert answer.found and "forty thousand homes" in answer.citations[0].evidence
    assert retrieve("When does NTSC draw the odd-numbered scan lines?", k=1, settings=settings)[0].title == "NTSC"


@pytest.mark.slow
def test_article_failing_in_chunking_is_named_in_the_summary_and_the_rest_is_indexed(
    settings: Settings, corpus: Path, monkeypatch, capsys
):
    assert main(["--index-dir", str(settings.index_dir), "index", "-q", str(corpus)]) == 0
    first = current_version(settings.index_dir)
    (corpus / "wind.txt").write_text(WIND.replace("Tuesday", "Wednesday"), encoding="utf-8")
    capsys.readouterr()
    real = qa.chunk.chunk_article
    live_during_build = []

    def chunk_article(article, *args, **kwargs):
        if article.source == "library.txt":
            live_during_build.append(current_version(settings.index_dir))
            raise RuntimeError("injected chunking failure")
        return real(article, *args, **kwargs)

    monkeypatch.setattr(qa.chunk, "chunk_article", chunk_article)
    # library.txt is unchanged, so an incremental build would reuse it: a new model setting
    # (chunk size) makes every article go through chunking again.
    monkeypatch.setenv("QA_CHUNK_TOKENS", "180")
    assert main(["--index-dir", str(settings.index_dir), "index", "-q", str(corpus)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    skipped = {
        line.strip().split(": ", 1)[0]: line.strip().split(": ", 1)[1]
        for line in out.split("Skipped", 1)[1].splitlines()[1:]
    }
    assert live_during_build == [first]  # the previous version was live while the new one was built
    assert current_version(settings.index_dir) != first
    assert_library_left_out(settings.model_copy(update={"chunk_tokens": 180}), skipped, "splitting it into passages")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["passages", "sentences"])
def test_article_failing_in_embedding_is_left_out_alone(settings: Settings, corpus: Path, monkeypatch, stage: str):
    real = LocalEmbedder.encode_documents
    calls = []

    def encode_documents(self, texts, **kwargs):
        calls.append(len(texts))
        # "passages": the library's passage fails; "sentences": only its sentence embedded alone.
        if any(t == LIBRARY_SENTENCE if stage == "sentences" else LIBRARY_SENTENCE in t for t in texts):
            raise RuntimeError("injected embedding failure")
        return real(self, texts, **kwargs)

    monkeypatch.setattr(LocalEmbedder, "encode_documents", encode_documents)
    report = build_index(corpus, settings=settings)
    assert calls[0] > 3  # passages of several articles went in one batch, and then one article at a time
    assert_library_left_out(settings, {s.source: s.reason for s in report.skipped}, f"embedding its {stage}")
    assert report.articles == 2 and report.passages == len(open_index(settings.index_dir).chunks)


# --- bookkeeping, with the fake embedder ---------------------------------------------------------


class FailingFake(FakeEmbedder):
    """FakeEmbedder whose `encode_documents` fails on any batch holding a text with `poison`."""

    def __init__(self, poison: str):
        super().__init__()
        self.poison = poison

    def encode_documents(self, texts, *, progress=False):
        if any(self.poison in t for t in texts):
            raise ValueError(f"cannot embed {self.poison!r}")
        return super().encode_documents(texts)


def test_a_failed_article_is_embedded_once_fixed_and_the_others_are_reused(settings: Settings, corpus: Path):
    report = build_index(corpus, settings=settings, embedder=FailingFake("sixty thousand"))
    assert [s.source for s in report.skipped] == ["library.txt"]
    assert "ValueError: cannot embed 'sixty thousand'" in report.skipped[0].reason
    kept = open_index(settings.index_dir)
    embedder = FakeEmbedder()
    report = build_index(corpus, settings=settings, embedder=embedder)
    assert report.skipped == [] and report.articles == 3
    assert embedder.embedded and all(t in LIBRARY for t in embedder.embedded)  # only the library's texts
    assert report.reused == len(kept.chunks)


def test_an_embedder_failing_for_every_article_stops_the_build(settings: Settings, corpus: Path):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    before = current_version(settings.index_dir)
    (corpus / "wind.txt").write_text(WIND.replace("Tuesday", "Monday"), encoding="utf-8")
    (corpus / "library.txt").write_text(LIBRARY.replace("Saturday", "Sunday"), encoding="utf-8")
    with pytest.raises(ValueError, match="cannot embed"):  # broken for all: not one article's fault
        build_index(corpus, settings=settings, embedder=FailingFake("day"))
    assert current_version(settings.index_dir) == before


def test_every_article_failing_is_one_error_and_keeps_the_index(settings: Settings, corpus: Path, monkeypatch):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    before = current_version(settings.index_dir)

    def chunk_article(article, *args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(qa.chunk, "chunk_article", chunk_article)
    pattern = r"Every article .* failed \(3\); the first, library.txt \('New library.*RuntimeError: injected.*left as"
    with pytest.raises(QAError, match=pattern):
        build_index(corpus, settings=settings.model_copy(update={"chunk_tokens": 100}), embedder=FakeEmbedder())
    assert current_version(settings.index_dir) == before
    assert not list(settings.index_dir.glob(".building-*"))


def test_a_reader_bug_on_one_file_or_line_skips_only_it(corpus: Path, monkeypatch):
    (corpus / "two.jsonl").write_text(
        json.dumps({"title": "Fine", "text": "A fine line about the harbour."}) + "\n"
        + json.dumps({"title": "Odd", "text": "An odd line about the harbour."}) + "\n",
        encoding="utf-8",
    )
    (corpus / "page.md").write_text("# Page\n\nA page about the harbour.\n", encoding="utf-8")
    real = qa.ingest.formats._jsonl_article

    def jsonl_article(line, source):
        if "Odd" in line:
            raise KeyError("odd")
        return real(line, source)

    def read_markdown(text, source):
        raise AttributeError("reader bug")

    monkeypatch.setattr(qa.ingest.formats, "_jsonl_article", jsonl_article)
    monkeypatch.setitem(qa.ingest.formats.TEXT_READERS, ".md", read_markdown)
    articles, skipped = qa.ingest.load_corpus(corpus)
    reasons = {s.source: s.reason for s in skipped}
    assert "AttributeError: reader bug" in reasons["page.md"] and "qa index" in reasons["page.md"]
    assert "line 2: could not be read (KeyError: 'odd')" in reasons["two.jsonl#2"]
    assert {a.source for a in articles} == {"wind.txt", "library.txt", "ntsc.jsonl#1", "two.jsonl#1"}


def test_an_unexpected_build_error_is_one_line_from_the_cli(settings: Settings, corpus: Path, monkeypatch, capsys):
    import qa.index.build

    def broken(*args, **kwargs):
        raise RuntimeError("disk gremlin")

    monkeypatch.setattr(qa.index.build, "write_version", broken)
    monkeypatch.setattr(qa.embed, "get_embedder", lambda settings: FakeEmbedder())
    monkeypatch.delenv("QA_DEBUG", raising=False)
    assert main(["--index-dir", str(settings.index_dir), "index", "-q", str(corpus)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("Error: Building the index failed unexpectedly")
    assert "RuntimeError: disk gremlin" in err and "QA_DEBUG=1" in err


def test_a_lone_surrogate_escape_in_a_jsonl_line_is_named(corpus: Path):
    # json.loads turns "\ud800" into a string no UTF-8 tool (hash, tokenizer) can take.
    (corpus / "escapes.jsonl").write_text(
        '{"title": "Broken", "text": "Half a pair \\ud800 here. More text."}\n'
        '{"title": "Whole", "text": "A whole pair \\ud83d\\ude00 here. More text."}\n',
        encoding="utf-8",
    )
    articles, skipped = qa.ingest.load_corpus(corpus)
    reasons = {s.source: s.reason for s in skipped}
    assert reasons == {"escapes.jsonl#1": "line 1: 'text' holds a lone surrogate \\ud800 at character 12: "
                       "an escape of half a UTF-16 pair, which is not text; fix that escape"}
    assert "A whole pair \U0001f600 here. More text." in {a.text for a in articles}
