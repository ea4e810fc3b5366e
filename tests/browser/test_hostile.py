"""Corpus text is untrusted. A corpus whose documents carry script tags, event handlers,
`javascript:` links and remote images is indexed by the server itself at startup, asked about
in the chat, and shown: everything must appear as text; nothing may run or be fetched."""

from __future__ import annotations

import json

import pytest

from tests.browser.chat import QUESTION, ask, wait_for_reply
from tests.browser.live import copy_corpus, start_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCRIPT = "<script>window.__pwned=1;alert('script')</script>"
IMG = "<img src=x onerror=\"window.__pwned=1;alert('img')\">"
REMOTE = '<img src="http://example.invalid/remote.png">'
MD_IMG = "![poster](http://example.invalid/poster.png)"
JS_LINK = "[the programme](javascript:window.__pwned=1)"
HTML_LINK = '<a href="javascript:window.__pwned=1">programme</a>'
TEMPLATES = "${window.__pwned=1} {{constructor.constructor('window.__pwned=1')()}}"

PAYLOAD = f"{SCRIPT} {IMG} {REMOTE} {MD_IMG} {JS_LINK} {HTML_LINK} {TEMPLATES}"

TXT = f"""Harbour festival report

The harbour festival choir of Port Elsbeth sang sea shanties on Saturday evening {PAYLOAD} while the lighthouse keepers listened from the pier.

The festival committee said that the choir had rehearsed for three months before the harbour festival, and that next year the choir will sing again.
"""

MD = f"""# Harbour festival {SCRIPT}

The harbour festival of Port Elsbeth ended with fireworks over the old quay {MD_IMG} {JS_LINK} and a parade of fishing boats.

Organisers counted eleven thousand visitors at the harbour festival this year {IMG} {REMOTE}, a record for the town.
"""

HTML = f"""<!doctype html><html><head><title>Harbour festival {IMG}</title>
<script>window.__pwned = 1; alert('raw script in the html file');</script></head>
<body><article><h1>Harbour festival lanterns</h1>
<p>The lantern makers of Port Elsbeth hung four hundred paper lanterns along the harbour for the festival
&lt;script&gt;window.__pwned=1&lt;/script&gt; &lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;
&lt;img src=&quot;http://example.invalid/lantern.png&quot;&gt; and lit them at dusk.</p>
<p>Children carried the lanterns in a procession to the harbour festival stage, where the mayor thanked the lantern makers.
<img src="http://example.invalid/inline.png" onerror="window.__pwned=1"> <a href="javascript:window.__pwned=1">link</a></p>
</article></body></html>
"""

JSONL = json.dumps(
    {
        "title": f"Harbour festival tickets {SCRIPT}",
        "url": "javascript:window.__pwned=1",
        "text": f"Tickets for the harbour festival of Port Elsbeth cost five euros {PAYLOAD} and were sold at the ferry terminal.\n\n"
        "The ferry company added extra boats for the harbour festival weekend.",
    }
)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    corpus = copy_corpus(["fr-employes-openai-vers-microsoft.txt"], tmp / "corpus")
    (corpus / "festival.txt").write_text(TXT, encoding="utf-8")
    (corpus / "festival.md").write_text(MD, encoding="utf-8")
    (corpus / "lanterns.html").write_text(HTML, encoding="utf-8")
    (corpus / "tickets.jsonl").write_text(JSONL + "\n", encoding="utf-8")
    # No index yet: the server builds it from the corpus when it starts. Every passage counts as
    # evidence (this tests rendering, not retrieval): the hostile text is always quoted and cited.
    live = start_server(tmp / "index", tmp, corpus=corpus, env={"QA_MIN_EVIDENCE": "-10"})
    yield live
    live.stop()


@pytest.mark.parametrize(
    "question",
    [
        "What did the harbour festival choir sing on Saturday?",
        "How many lanterns were hung for the harbour festival?",
        "How much did tickets for the harbour festival cost?",
    ],
    ids=["txt", "html", "jsonl"],
)
def test_hostile_documents_render_as_text_and_nothing_runs(
    browser, hostile_server, artifacts, question, request
):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    dialogs, remote = [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on(
        "request", lambda request: remote.append(request.url) if "example.invalid" in request.url else None
    )
    try:
        page.goto(hostile_server.url + "/")
        page.wait_for_selector(QUESTION)
        ask(page, question)
        reply = wait_for_reply(page)
        assert "[1]" in reply
        page.wait_for_selector("#qa-sources .qa-src")
        # Open every folded part so that everything is rendered, then click every citation.
        page.evaluate("document.querySelectorAll('#qa-sources details').forEach(d => d.open = true)")
        for link in page.locator("#qa-chatbot a[href^='#src-']").all():
            link.click()
        page.mouse.move(600, 400)
        page.wait_for_timeout(1500)

        assert dialogs == []
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert remote == []
        # Shown as text, in the sources panel and in the reply.
        sources = page.locator("#qa-sources").inner_text()
        assert "<script>" in sources or "<img" in sources, sources[:500]
        for area in ("#qa-sources", "#qa-chatbot"):
            assert page.locator(f"{area} script, {area} img, {area} iframe").count() == 0
            hrefs = page.locator(f"{area} a[href]").evaluate_all(
                "els => els.map(e => e.getAttribute('href'))"
            )
            assert not [
                h for h in hrefs if h.strip().lower().startswith(("javascript", "data", "vbscript"))
            ], hrefs
        page.screenshot(path=str(artifacts / f"hostile-{request.node.callspec.id}.png"))
    finally:
        context.close()
