"""Hostile questions, property-based: the REST API (in process, real model and index) and the
library never fail with anything but a clear "unusable question".

Whatever the question (empty, whitespace, 1 MB, control characters, NUL, lone surrogates sent
as JSON escapes, right-to-left text, emoji, mixed scripts): never a 500, never a traceback;
422 with a JSON message for an empty or too long one, or one without letters or digits (only
format characters, punctuation, symbols, emoji) or one character repeated, 200 otherwise; the
property tests of that rule need no model and are fast. QA_FUZZ_EXAMPLES sets the
number of generated questions per test (default 60).
"""

from __future__ import annotations

import json
import os
import unicodedata
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qa.errors import InvalidQuestionError
from qa.retrieval import clean_question

slow = pytest.mark.slow  # the tests that need the real model and an index

EXAMPLES = int(os.environ.get("QA_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

HOSTILE = [
    "",
    " ",
    "\t\n\r \u3000\u00a0",
    "\x00",
    "who\x00owns\x00OpenAI?",
    "\x1b[31mred\x1b[0m OpenAI?",
    "\ud800",
    "OpenAI \udfff Microsoft \ud83d",
    "\u202eMicrosoft \u202dOpenAI\u202c?",
    "مَن يملك أوبن إيه آي؟",
    "מי הבעלים של OpenAI?",
    "🤖🤖🤖 OpenAI 💥 Microsoft? 👨‍👩‍👧‍👦",
    "Microsoft の CEO は誰 кто 谁 누구 who?",
    "\ufeff\ufffe\uffff",
    "\U0010ffff\U000e0001",
    "a" * 2000,
    "a" * 2001,
    "x" * 1_000_000,
    "é" * 1_000_000,
    "<script>alert(1)</script>",
    "'; DROP TABLE passages; --",
    "{{7*7}} ${7*7} %s %n",
    "../../../../etc/passwd",
    "\u0301\u0301\u0301\u0301",
]

# Any code point, surrogates and private use included, with a bias to the interesting ones.
characters = st.characters(codec=None, categories=None)
questions = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(characters, max_size=80),
    st.text(st.sampled_from(" \t\n\x00\x1b\u200b\u202e\ud800\udc00😀ا中ñ?"), max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE[8:14]), st.text(characters, max_size=20)),
)


MAX_BODY = 1_048_576  # QA_MAX_BODY_BYTES's default: a larger body is refused unread (413)


def expected_status(question: str) -> int:
    if len(json_body({"question": question})) > MAX_BODY:
        return 413
    try:
        clean_question(question, 2000)
    except InvalidQuestionError:
        return 422
    return 200


def json_body(payload: dict) -> bytes:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a hostile client would send them.
    return json.dumps(payload, ensure_ascii=True).encode()


@pytest.fixture(scope="module")
def client(seed_settings):
    from starlette.testclient import TestClient

    from qa.retrieval import get_engine
    from qa.serve.app import create_app

    get_engine(seed_settings).warm_up()
    app = create_app(seed_settings)
    app.state.qa.state = "ready"  # loaded above; no lifespan thread needed
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def check(response, question: str) -> None:
    text = response.text
    assert response.status_code == expected_status(question), (question[:80], response.status_code, text[:300])
    assert "Traceback" not in text and 'File "' not in text
    body = response.json()
    if response.status_code in (413, 422):
        assert isinstance(body["detail"], str) and body["detail"], body


def as_received(question: str) -> str:
    """The question the server decodes: in JSON, a high surrogate escape followed by a low one
    is one astral character, whereas Python keeps them as two lone surrogates."""
    return json.loads(json_body({"q": question}))["q"]


@slow
@FUZZ
@given(question=questions)
@example(question="\x00" * 5000)
@example(question=" " * 1_000_000)
@example(question="0\ud800\udc00")
def test_ask_never_fails_on_a_hostile_question(client, question):
    question = as_received(question)
    response = client.post(
        "/api/v1/ask", content=json_body({"question": question}), headers={"content-type": "application/json"}
    )
    check(response, question)
    if response.status_code == 200:
        answer = response.json()
        assert answer["question"] == clean_question(question, 2000) and answer["reply"]


@slow
@FUZZ
@given(question=questions, k=st.integers(1, 100))
def test_search_never_fails_on_a_hostile_question(client, question, k):
    # Lone surrogates have no UTF-8 form: sent as the bytes a broken client would send. URLs are
    # capped by clients and proxies long before 1 MB: 4,000 characters are over the limit already.
    question = question[:4000]
    q = urllib.parse.quote(question.encode("utf-8", "surrogatepass"))
    response = client.get(f"/api/v1/search?k={k}&q={q}")
    decoded = urllib.parse.unquote(q, errors="replace")  # what the server sees
    check(response, decoded)
    if response.status_code == 200:
        assert 1 <= len(response.json()) <= k


@slow
@FUZZ
@given(history=st.lists(questions, max_size=5))
def test_hostile_history_never_fails(client, history):
    response = client.post(
        "/api/v1/ask",
        content=json_body({"question": "Who owns OpenAI?", "history": history}),
        headers={"content-type": "application/json"},
    )
    too_large = len(json_body({"question": "Who owns OpenAI?", "history": history})) > MAX_BODY
    assert response.status_code in ((413,) if too_large else (200, 422)), response.text[:300]
    assert "Traceback" not in response.text
    if response.status_code == 422:  # only for a too long earlier question, and saying so
        assert any(len(h) > 2000 for h in history) and "history item" in response.text, response.text


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"null", b"[]", b'{"question": null}', b'{"question": ["a"]}', b'{"question": "\\ud800"}',
     b'{"question": "a", "history": "notalist"}', b'\xff\xfe{"question": "a"}', b'{"question": "' + b"\xc3" + b'"}'],
)
@slow
def test_malformed_json_bodies_get_a_json_4xx(client, body):
    response = client.post("/api/v1/ask", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 422), response.text[:300]  # 400: not JSON at all
    assert "Traceback" not in response.text
    if response.status_code != 200:
        assert isinstance(response.json()["detail"], str)


@slow
@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None, database=None)
@given(question=st.one_of(questions, st.none(), st.integers(), st.binary(max_size=20), st.lists(st.text(max_size=3))))
def test_library_raises_only_invalid_question(seed_settings, question):
    import qa

    for call in (lambda: qa.retrieve(question, k=3, settings=seed_settings),
                 lambda: qa.ask(question, settings=seed_settings)):
        try:
            result = call()
        except InvalidQuestionError as exc:
            assert str(exc)
        else:
            assert isinstance(question, str) and result is not None


# --------------------------------------------------------------------------- hostile paths
# tests/test_server_security.py covers plain and %2e-encoded traversal; here: double encoding,
# overlong UTF-8, backslashes, NUL, and the files of a real index and corpus by absolute path.

TRAVERSALS = [
    "/embed/%252e%252e/%252e%252e/%252e%252e/etc/passwd",
    "/static/%252e%252e%252f%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/gradio_api/file=%252Fetc%252Fpasswd",
    "/gradio_api/file=..%252F..%252F..%252F..%252Fetc%252Fpasswd",
    "/assets/%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/static/..%5c..%5c..%5c..%5cetc%5cpasswd",
    "/gradio_api/file=/etc/passwd%00.png",
    "/embed/gradio.js%00/../../../../etc/passwd",
    "/api/v1/../../../../etc/passwd",
]


@pytest.fixture(scope="module")
def live_app(seed_settings):
    from qa.retrieval import get_engine
    from qa.serve.app import create_app
    from tests.test_server_security import serving

    get_engine(seed_settings).warm_up()
    app = create_app(seed_settings)
    with serving(app) as url:
        app.state.qa.state = "ready"
        yield url


@slow
@pytest.mark.parametrize("path", TRAVERSALS)
def test_encoded_traversal_never_serves_files(live_app, path):
    from tests.test_server_security import raw_get

    status, _, body = raw_get(live_app, path)
    assert 400 <= status < 500, (path, status, body[:200])
    assert b"root:" not in body


@slow
def test_index_and_corpus_files_are_not_served_by_absolute_path(live_app, seed_settings):
    from qa.index.format import current_version
    from tests.test_server_security import raw_get

    version_dir = (seed_settings.index_dir / current_version(seed_settings.index_dir)).resolve()
    corpus_file = next(seed_settings.corpus_dir.resolve().iterdir())
    secrets = [version_dir / "manifest.json", version_dir / "store" / "articles.bin", seed_settings.index_dir.resolve() / "CURRENT", corpus_file]
    for target in secrets:
        quoted = urllib.parse.quote(str(target))
        for path in [f"/gradio_api/file={target}", f"/gradio_api/file={quoted}", f"/file={target}",
                     f"/gradio_api/file={urllib.parse.quote(quoted)}"]:
            status, _, body = raw_get(live_app, path)
            assert 400 <= status < 500, (path, status)
            assert b"format_version" not in body and b"doc_id" not in body and b"Microsoft" not in body


# --------------------------------------------------------------------------- questions without meaning
# Fast: pure logic, no model. A question needs a letter or a digit once format and control
# characters, spaces, punctuation, symbols and emoji are set aside, and more than one character
# repeated; real questions, however short and in whatever script, pass.

from qa.errors import MeaninglessQuestionError
from qa.question import asker_language

NO_MEANING_CATEGORIES = ["Cf", "Cc", "Zs", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So"]
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2069\u061c"
CJK_PUNCTUATION = "。、，！？「」『』（）【】《》〈〉・…～：；"
EMOJI = ["😀", "🤖", "💥", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "1️⃣"[1:], "🏳️‍🌈", "✨"]
no_meaning_chars = st.one_of(
    st.characters(categories=NO_MEANING_CATEGORIES),
    st.sampled_from(INVISIBLE + CJK_PUNCTUATION),
    st.sampled_from(EMOJI),
)
no_meaning = st.lists(no_meaning_chars, min_size=1, max_size=60).map("".join)
# Real short questions in many scripts: no spaces (CJK, Thai), right to left, a number, a name.
REAL = [
    "Who is Nadella?", "Qui est Nadella ?", "¿Quién es Nadella?", "Wer ist Nadella?", "谁是纳德拉？", "纳德拉",
    "ナデラとは誰？", "나델라는 누구?", "ใครคือนาเดลลา", "ใคร", "من هو ناديلا؟", "מי זה נאדלה?", "नडेला कौन है?",
    "Кто такой Наделла?", "Ποιος είναι ο Ναντέλα;", "Nadella là ai?", "Nadella kim?", "Nadella", "OpenAI",
    "42", "2023", "770", "777", "1111", "49 %", "谁", "Ai?", "ok", "C++?", "x", "a",
]


def refused(question: str) -> InvalidQuestionError:
    with pytest.raises(InvalidQuestionError) as info:
        clean_question(question, 2000)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    return info.value


@settings(max_examples=300, deadline=None, database=None)
@given(question=no_meaning)
def test_no_letters_or_digits_is_refused(question):
    error = refused(question)
    visible = [ch for ch in question if not ch.isspace() and unicodedata.category(ch) != "Cc"]
    if visible:  # not only spaces and control characters ("empty"): named by code point
        assert isinstance(error, MeaninglessQuestionError) and "U+" in str(error)
    else:
        assert "empty" in str(error)


@settings(max_examples=200, deadline=None, database=None)
@given(
    char=st.characters(categories=["L", "N"]).filter(lambda c: len(c.casefold()) == 1),
    times=st.integers(5, 1900),
    noise=st.lists(no_meaning_chars, max_size=5),
    upper=st.booleans(),
)
def test_one_character_repeated_is_noise(char, times, noise, upper):
    question = "".join(noise) + (char.upper() if upper and len(char.upper()) == 1 else char) * times
    assert isinstance(refused(question), MeaninglessQuestionError)


@pytest.mark.parametrize(
    "question",
    ["\u200b\u200b\u200b", "\ufeff" * 10, "\u00ad" * 7, "\u200f\u200e\u200f", "。、？！「」", "😀" * 2000,
     "🤖 " * 500, "a" * 2000, "aaaa", "哈哈哈哈", "ـــــ", "ーーー", "?!?!", "11111", "… — ·"],
)
def test_issue_examples_are_refused(question):
    assert isinstance(refused(question), MeaninglessQuestionError)


@settings(max_examples=300, deadline=None, database=None)
@given(
    question=st.one_of(
        st.sampled_from(REAL),
        st.integers(0, 10**12).map(str).filter(lambda n: len(set(n)) > 1 or len(n) < 5),
    ),
    before=st.lists(no_meaning_chars, max_size=4).map("".join),
    after=st.lists(no_meaning_chars, max_size=4).map("".join),
)
def test_real_questions_pass(question, before, after):
    cleaned = clean_question(before + question + after, 2000)
    assert "".join(question.split()) in "".join(cleaned.split())


@pytest.mark.parametrize(
    ("history", "accept_language", "expected"),
    [
        (["Qui a licencié Sam Altman ?"], None, "fr"),
        (["Wer hat Sam Altman entlassen?", "\u200b"], "es", "de"),  # the latest question with words
        ([], "de-CH,de;q=0.9,en;q=0.5", "de"),
        (None, "sv,ja;q=0.8", "ja"),  # the first language we have messages in
        (None, "sv", "en"),
        (None, None, "en"),
    ],
)
def test_refusal_in_the_askers_language(history, accept_language, expected):
    from qa.i18n import QUESTION_ERRORS

    lang = asker_language(history, accept_language)
    assert lang == expected
    with pytest.raises(MeaninglessQuestionError) as info:
        clean_question("\u200b\u200b\u200b", 2000, lang)
    assert info.value.lang == expected
    assert str(info.value) == QUESTION_ERRORS["no_words"][expected].format(chars="U+200B×3")


def test_refusal_messages_cover_every_reply_language():
    from qa.i18n import LEAD_IN, QUESTION_ERRORS

    for kind, messages in QUESTION_ERRORS.items():
        assert set(messages) == set(LEAD_IN), kind
        assert all("{chars}" in message for message in messages.values()), kind


def test_rest_refuses_a_question_without_words_with_422_in_the_askers_language(tmp_path):
    """The real app, before any index is loaded: the refusal comes first (422, not 503)."""
    from starlette.testclient import TestClient

    from qa.config import Settings
    from qa.i18n import QUESTION_ERRORS
    from qa.serve.app import create_app

    app = create_app(Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index"))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing loads
    french = QUESTION_ERRORS["no_words"]["fr"].format(chars="U+200B×3")
    response = client.post("/api/v1/ask", json={"question": "\u200b\u200b\u200b"}, headers={"Accept-Language": "fr"})
    assert (response.status_code, response.json()) == (422, {"detail": french})
    history = {"question": "🤖" * 2000, "history": ["Wer hat Sam Altman entlassen?"]}
    response = client.post("/api/v1/ask", json=history)
    assert response.status_code == 422 and response.json()["detail"].startswith("Die Frage enthält keine")
    response = client.get("/api/v1/search", params={"q": "aaaa"}, headers={"Accept-Language": "es-MX"})
    assert response.status_code == 422 and response.json()["detail"].startswith("La pregunta es un solo")
    response = client.get("/api/v1/search", params={"q": "Who is Nadella?"})
    assert response.status_code == 503  # a real question goes on to the (not yet loaded) index
