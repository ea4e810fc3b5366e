"""Agents and chat front-ends against a real running server (real model, real corpus): the
OpenAI-compatible endpoint with the real `openai` client (non-streamed, streamed, multi-turn)
and the MCP tools with the real `mcp` client (listed, both called, with sign-in required).
"""

from __future__ import annotations

import json
import re

import openai
import pytest

from qa.i18n import LEAD_IN, WEAK_EVIDENCE
from tests.aio import run_async
from tests.browser.live import start_server
from tests.test_openai_api import BASIC, call_tool, list_tools

pytestmark = pytest.mark.slow

DE = "Wie viele OpenAI-Mitarbeiter drohten mit der Kündigung?"
JA = "OpenAIの従業員770人のうち何人が辞めると脅したのか？"
STAFF = ("700", "770")


@pytest.fixture(scope="module")
def chat(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models(chat):
    assert [m.id for m in chat.models.list()] == ["qa"]


def test_chat_completion_answers_in_the_askers_language_with_sources_and_citations(chat):
    response = chat.chat.completions.create(model="qa", messages=[{"role": "user", "content": DE}])
    text = response.choices[0].message.content
    reply, sources = text.split("\n\nQuellen:\n")  # the sources heading in German
    assert reply.startswith("Laut den Quellen") and "[1]" in reply
    assert any(number in reply for number in STAFF), reply
    citations = response.model_extra["citations"]
    assert [line.split("]")[0] + "]" for line in sources.splitlines()] == [f"[{c['n']}]" for c in citations]
    first = citations[0]
    assert first["passage"]["source"] in sources.splitlines()[0]
    assert {"date", "outlet", "lang", "start", "end"} <= set(first["passage"])
    assert (
        first["evidence"] in first["passage"]["text"] or first["evidence_start"] >= first["passage"]["start"]
    )
    assert response.model == "qa" and response.choices[0].finish_reason == "stop"


def test_streamed_completion_is_the_same_text_in_pieces(chat):
    whole = chat.chat.completions.create(model="qa", messages=[{"role": "user", "content": JA}])
    stream = chat.chat.completions.create(model="qa", messages=[{"role": "user", "content": JA}], stream=True)
    pieces, last = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert len(pieces) > 5 and "".join(pieces) == whole.choices[0].message.content
    assert re.search(r"[\u3040-\u30ff]", "".join(pieces))  # Japanese
    assert last.choices[0].finish_reason == "stop" and last.model_extra["citations"]


def test_multi_turn_uses_the_earlier_user_turns_as_history(chat):
    # The follow-up alone names nobody; with the first question as history it is about OpenAI's staff.
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "How many OpenAI employees threatened to resign?"},
        {"role": "assistant", "content": "700 of 770 [1]"},
        {"role": "user", "content": "Et pourquoi menaçaient-ils de partir ?"},
    ]
    response = chat.chat.completions.create(model="qa", messages=messages)
    text = response.choices[0].message.content
    # A cited reply in French: "according to the sources", or its hedged form when the best
    # evidence is weak (qa.answer's calibrated bands).
    assert text.startswith((LEAD_IN["fr"], WEAK_EVIDENCE["fr"])), text[:80]
    assert "\n\nSources :\n" in text or "\n\nSources:\n" in text
    assert response.model_extra["lang"] == "fr" and response.model_extra["citations"]
    quoted = " ".join(c["evidence"] for c in response.model_extra["citations"])
    # About OpenAI's staff and why they would leave (the board's decisions, Altman's departure).
    assert re.search(r"Altman|démission|quitter|rejoindre|employés.*conseil", quoted), quoted


def test_mcp_lists_and_calls_both_tools(server):
    url = server.url + "/gradio_api/mcp/"
    assert sorted(run_async(list_tools(url))) == ["ask", "search"]
    found = run_async(call_tool(url, "search", {"question": DE, "k": 3}))
    passages = json.loads(found.content[0].text)
    assert not found.isError and len(passages) == 3
    assert {"source", "lang", "date", "outlet", "start", "end", "text"} <= set(passages[0])
    assert any(any(n in p["text"] for n in STAFF) for p in passages)
    answered = run_async(call_tool(url, "ask", {"question": JA}))
    answer = json.loads(answered.content[0].text)
    assert answer["found"] is True and answer["lang"] == "ja" and "[1]" in answer["reply"]
    citation = answer["citations"][0]
    assert (
        citation["passage"]["source"].endswith(".txt")
        and citation["evidence_end"] > citation["evidence_start"]
    )
    follow_up = run_async(call_tool(url, "ask", {"question": "Et pourquoi ?", "history": [JA]}))
    assert json.loads(follow_up.content[0].text)["citations"]


def test_mcp_with_sign_in_required(seed_settings, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agents-auth")
    users = tmp / "users.txt"
    users.write_text("alice:s3cret\n", encoding="utf-8")
    live = start_server(
        seed_settings.index_dir,
        tmp,
        env={"QA_USERS_FILE": str(users)},
        headers={"Authorization": BASIC},
    )
    try:
        url = live.url + "/gradio_api/mcp/"
        with pytest.raises(Exception) as refused:
            run_async(list_tools(url))
        assert "401" in repr(refused.value) or "Unauthorized" in repr(refused.value), repr(refused.value)
        result = run_async(call_tool(url, "search", {"question": DE, "k": 1}, {"Authorization": BASIC}))
        assert not result.isError and len(json.loads(result.content[0].text)) == 1
        chat = openai.OpenAI(
            base_url=live.url + "/v1",
            api_key="unused",
            max_retries=0,
            default_headers={"Authorization": BASIC},
        )
        reply = chat.chat.completions.create(model="qa", messages=[{"role": "user", "content": DE}])
        assert reply.model_extra["citations"]
    finally:
        live.stop()


def test_citations_carry_the_articles_date_and_outlet(tmp_path):
    from qa import ask, retrieve
    from qa.config import Settings
    from qa.index.build import build_index
    from qa.serve.openai_api import reply_text

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    records = [
        {
            "title": "Microsoft hires Sam Altman",
            "text": "Microsoft hired Sam Altman on Monday to lead a new advanced AI research team. "
            "Greg Brockman joins him there.",
            "url": "https://www.example-news.com/tech/altman",
            "date": "2023-11-20T08:00:00Z",
            "lang": "en",
        },
        {
            "title": "Weather",
            "text": "Rain is expected in Paris all week, with mild temperatures.",
            "lang": "en",
        },
    ]
    (corpus / "news.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index")
    build_index(settings=settings)
    best = retrieve("Who did Microsoft hire?", k=2, settings=settings)
    assert best[0].outlet == "example-news.com" and best[0].date == "2023-11-20T08:00:00Z"
    assert best[1].outlet is None and best[1].date is None  # an article without them is kept, unlabelled
    answer = ask("Who did Microsoft hire?", settings=settings)
    cited = answer.citations[0].passage
    assert (cited.outlet, cited.date) == ("example-news.com", "2023-11-20T08:00:00Z")
    assert "[1] Microsoft hires Sam Altman — example-news.com, 2023-11-20 — news.jsonl#1" in reply_text(
        answer
    )
