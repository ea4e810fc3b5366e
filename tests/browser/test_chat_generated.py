"""The chat with generated answers (QA_LLM_URL) in a real browser: a real server whose LLM is a
scripted OpenAI-compatible server on 127.0.0.1, streaming its reply word by word. The reply in
the chat grows sentence by sentence, each one shown only once it passed its check."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.chat import QUESTION, ask, record_replies, wait_for_reply
from tests.browser.live import start_server
from tests.fake_llm import EMPLOYEES, INVENTED, SUPPORTED

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECOND = "La gran mayoría del personal de OpenAI prometió dimitir y unirse a Altman en Microsoft [{n}]."


@pytest.fixture(scope="module")
def llm_server(seed_settings, tmp_path_factory, llm):
    live = start_server(
        seed_settings.index_dir,
        tmp_path_factory.mktemp("llm-server"),
        env={"QA_LLM_URL": llm.url, "QA_LLM_TIMEOUT": "30"},
    )
    yield live
    live.stop()


def test_the_generated_reply_grows_sentence_by_sentence(browser, llm_server, llm):
    # The number of the citation quoting "700 sur 770" (the generated reply of this call is
    # refused by the check: the quotes come back, with their citations).
    llm.reply = "Nada."
    cited = httpx.post(f"{llm_server.url}/api/v1/ask", json={"question": EMPLOYEES}, timeout=120).json()
    n = next(c["n"] for c in cited["citations"] if "700 sur 770" in c["evidence"])
    first, second, invented = SUPPORTED.format(n=n), SECOND.format(n=n), INVENTED.format(n=n)
    llm.reply, llm.piece_delay = f"{first} {invented} {second}", 0.1  # ~3 s of words

    context = browser.new_context(locale="es-ES")
    try:
        page = context.new_page()
        page.goto(llm_server.url + "/")
        page.wait_for_selector(QUESTION)
        record_replies(page)
        ask(page, EMPLOYEES)
        # Between two sentences the reply rests a while: wait for the second, then for the end.
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(
                "() => window.__replies.some(text => text.includes('Altman en Microsoft'))", timeout=90_000
            )
        final = wait_for_reply(page, timeout=90)
        seen = [text for text in page.evaluate("window.__replies") if text.strip()]
    finally:
        context.close()

    assert llm.requests[-1]["stream"] is True  # the chat asked for a stream
    plain = [text.replace("\n", " ").strip() for text in seen]
    # The first sentence alone, then both: the reply grew by whole, checked sentences.
    assert any(text.startswith("700") and "Microsoft" not in text for text in plain), plain
    assert final.startswith("700") and "Altman en Microsoft" in final, final
    # Whole sentences only: no word-by-word prefix of the LLM's text is ever shown.
    assert all(text.endswith("].") for text in plain), plain
    # The invented sentence never shows, not even for a moment; the reply only grows.
    assert not [text for text in plain if "queso" in text], plain
    assert all(final.replace("\n", " ").startswith(text) for text in plain), plain
