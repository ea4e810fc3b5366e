"""The chat page in a real browser: streamed, cited replies in the asker's language, clickable
citations, labels in the browser's language, nothing fetched from other hosts, nothing stored."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from qa.i18n import LABELS
from tests.browser.chat import QUESTION, ask, bot_messages, record_replies, wait_for_reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JA = "OpenAIの従業員770人のうち何人が辞めると脅したのか？"
ES = "¿Cuántos empleados de OpenAI amenazaron con dimitir para irse a Microsoft?"
KANA = re.compile(r"[\u3040-\u30ff]")


@pytest.fixture
def open_page(browser, app_server):
    """A fresh browser context (own storage) per test, recording every request it makes."""
    contexts = []

    def _open(locale: str = "en-US", width: int = 1280, height: int = 900):
        context = browser.new_context(locale=locale, viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(app_server.url + "/")
        page.wait_for_selector(QUESTION)
        return page

    yield _open
    for context in contexts:
        context.close()


def only_own_origin(page, server_url: str) -> None:
    origin = urlsplit(server_url)
    others = {
        url
        for url in page.requests
        if urlsplit(url).scheme not in {"data", "blob"} and urlsplit(url).netloc != origin.netloc
    }
    assert not others, f"requests to other hosts: {sorted(others)}"


def test_japanese_question_gets_a_streamed_cited_reply_in_japanese(open_page, app_server, artifacts):
    page = open_page(locale="ja-JP")
    record_replies(page)
    ask(page, JA)
    reply = wait_for_reply(page)
    assert KANA.search(reply), reply
    assert "[1]" in reply
    lengths = [len(text) for text in page.evaluate("window.__replies") if text]
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), f"not streamed: {lengths}"
    assert page.locator("#qa-chatbot a[href='#src-1-1']").count() == 1
    assert page.locator("#src-1-1").count() == 1
    page.screenshot(path=str(artifacts / "chat-desktop-ja.png"))
    only_own_origin(page, app_server.url)


def test_spanish_question_then_a_follow_up(open_page, app_server, artifacts):
    from qa.i18n import LEAD_IN

    page = open_page(locale="es-ES")
    ask(page, ES)
    reply = wait_for_reply(page)
    assert reply.startswith(LEAD_IN["es"]) and "[1]" in reply, reply
    # The follow-up gets its own sources, numbered by question: the first question's stay below.
    ask(page, "¿Y Microsoft?")
    wait_for_reply(page, count=2)
    assert page.locator("#qa-sources details.qa-turn").count() >= 1
    page.screenshot(path=str(artifacts / "chat-desktop.png"))
    only_own_origin(page, app_server.url)


def test_clicking_a_citation_highlights_its_source(open_page, artifacts):
    page = open_page()
    ask(page, JA)
    wait_for_reply(page)
    links = page.locator("#qa-chatbot a[href^='#src-1-']")
    target = links.last.get_attribute("href")
    links.last.click()
    card = page.locator(target)
    page.wait_for_function(
        "id => document.getElementById(id).classList.contains('qa-active')", arg=target[1:], timeout=5000
    )
    assert card.evaluate("e => getComputedStyle(e).boxShadow") != "none"  # visibly highlighted
    assert page.locator(".qa-src.qa-active").count() == 1
    # Scrolled into view.
    page.wait_for_timeout(700)
    box = card.bounding_box()
    assert 0 <= box["y"] < 900 - 40, box
    page.screenshot(path=str(artifacts / "chat-citation.png"))
    assert card.locator("mark").count() >= 1  # the quoted sentence is highlighted
    assert page.url.endswith("/")  # handled in place: no navigation


def test_questions_are_not_kept_in_browser_storage(open_page):
    page = open_page()
    ask(page, JA)
    wait_for_reply(page)
    stored = page.evaluate(
        """async () => {
        const dump = (s) => Object.keys(s).map(k => k + '=' + s.getItem(k)).join('\\n');
        const dbs = indexedDB.databases ? (await indexedDB.databases()).map(d => d.name) : [];
        return {local: dump(localStorage), session: dump(sessionStorage), dbs};
    }"""
    )
    assert "770" not in stored["local"] and "OpenAI" not in stored["local"]
    assert "770" not in stored["session"] and "OpenAI" not in stored["session"]
    assert not [
        name for name in stored["dbs"] if "run" in (name or "").lower() or "history" in (name or "").lower()
    ]


def test_phone_width(open_page, app_server, artifacts):
    page = open_page(locale="en-US", width=390, height=844)
    page.screenshot(path=str(artifacts / "chat-phone-empty.png"))
    ask(page, JA)
    wait_for_reply(page)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390 + 1  # no sideways scrolling
    page.screenshot(path=str(artifacts / "chat-phone.png"))
    page.locator("#qa-chatbot a[href^='#src-1-']").first.click()
    page.wait_for_timeout(700)
    card = page.locator(".qa-src.qa-active")
    assert card.count() == 1 and card.is_visible()
    box = card.bounding_box()
    assert 0 <= box["y"] < 844  # scrolled to on the phone too
    page.screenshot(path=str(artifacts / "chat-phone-source.png"))
    only_own_origin(page, app_server.url)


@pytest.mark.parametrize(
    "locale, lang",
    [("fr-FR", "fr"), ("de-DE", "de"), ("ja-JP", "ja"), ("zh-CN", "zh"), ("es-ES", "es"), ("en-GB", "en")],
)
def test_labels_follow_the_browser_language(open_page, locale, lang):
    page = open_page(locale=locale)
    page.wait_for_timeout(300)
    assert page.locator("#qa-ask").inner_text().strip() == LABELS[lang]["ask"]
    assert page.locator("#qa-clear").inner_text().strip() == LABELS[lang]["clear"]
    assert page.locator(QUESTION).get_attribute("placeholder") == LABELS[lang]["placeholder"]
    assert LABELS[lang]["sources_empty"] in page.locator("#qa-sources").inner_text()


def test_empty_state_examples_and_clear(open_page, artifacts):
    page = open_page()
    assert "any language" in page.locator("#qa-chatbot").inner_text()
    examples = page.locator("#qa-chatbot button.example")
    assert examples.count() >= 5
    page.screenshot(path=str(artifacts / "chat-desktop-empty.png"))
    examples.filter(has_text="770").click()  # one click: asked at once
    reply = wait_for_reply(page)
    assert reply
    page.click("#qa-clear")
    page.wait_for_function("document.querySelectorAll(\"#qa-chatbot [data-testid='bot']\").length === 0")
    assert page.locator("#qa-sources .qa-src").count() == 0
    assert page.locator(QUESTION).input_value() == ""
    assert page.locator("#qa-chatbot button.example").count() >= 5  # back to the empty state


def test_an_uncovered_question_shows_the_reply_that_says_so(open_page, app_server):
    question = "What is the best recipe for a chocolate cake with raspberries?"
    expected = httpx.post(f"{app_server.url}/api/v1/ask", json={"question": question}, timeout=60).json()
    page = open_page()
    ask(page, question)
    reply = wait_for_reply(page)
    assert " ".join(reply.split()).startswith(" ".join(expected["reply"].split()[:4]))
    if not expected["found"]:
        assert bot_messages(page).last.locator("a").count() == 0


def test_too_long_question_is_refused_in_the_page(open_page):
    page = open_page()
    assert page.locator(QUESTION).get_attribute("maxlength") == "2000"


def open_filters(page) -> None:
    """Unfold the filter row (folded when the page opens)."""
    assert not page.locator("#qa-filter-since textarea, #qa-filter-since input").first.is_visible()
    page.locator("#qa-filters button").first.click()
    page.locator("#qa-filter-since textarea, #qa-filter-since input").first.wait_for(state="visible")


def test_filter_row_only_german_sources(open_page, artifacts):
    page = open_page()
    open_filters(page)
    page.locator("#qa-filter-langs input").click()
    page.locator("#qa-filter-langs input").fill("Deutsch")
    page.locator("#qa-filter-langs li[aria-label='Deutsch (de)']").click()
    page.keyboard.press("Escape")
    page.screenshot(path=str(artifacts / "chat-filters.png"))
    ask(page, "How many OpenAI employees threatened to quit?")
    reply = wait_for_reply(page)
    assert "[1]" in reply, reply
    badges = page.locator("#qa-sources .qa-src-meta .qa-lang").all_inner_texts()
    assert badges and set(badges) == {"DE"}, badges
    page.screenshot(path=str(artifacts / "chat-filters-answer.png"))


def test_filter_row_bad_date_is_said_in_the_chat(open_page):
    page = open_page()
    open_filters(page)
    page.locator("#qa-filter-since textarea, #qa-filter-since input").first.fill("yesterday")
    ask(page, "How many OpenAI employees threatened to quit?")
    reply = wait_for_reply(page)
    assert "yesterday" in reply and "is not a date" in reply and "YYYY-MM-DD" in reply, reply
    assert page.locator("#qa-sources .qa-src").count() == 0
    assert page.locator(QUESTION).input_value() == "How many OpenAI employees threatened to quit?"  # kept
    # A language the index does not hold: said in the chat with the languages it does hold.
    page.locator("#qa-filter-since textarea, #qa-filter-since input").first.fill("")
    page.locator("#qa-filter-langs input").click()
    page.locator("#qa-filter-langs li[aria-label='한국어 (ko)']").click()
    page.keyboard.press("Escape")
    page.click("#qa-ask")
    reply = wait_for_reply(page, count=2)
    assert "no passage is in" in reply and "ko" in reply and "de" in reply, reply
