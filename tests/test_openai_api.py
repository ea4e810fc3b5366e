"""The OpenAI-compatible endpoint (/v1) and the MCP server (/gradio_api/mcp) at the HTTP level,
with the real `openai` and `mcp` clients against a real server on 127.0.0.1: models, errors in
OpenAI's shape, the body limit, access control and the one admission bound.

No model and no index, as in test_server_security.py: the app stays "not ready" (or is marked
ready where a test needs the admission bound to be reached). Answers of the real model over
the real corpus are in test_agents_live.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from qa.models import Answer, Citation, Passage
from qa.serve.app import create_app
from qa.serve.openai_api import ChatError, ChatRequest, chunks, completion, conversation, pieces, reply_text
from tests.aio import run_async
from tests.test_server_limits import mark_ready
from tests.test_server_security import serving, settings_for

MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai")
    with serving(create_app(settings_for(tmp, max_body_bytes=65536))) as url:
        yield url


def client(url: str, **extra) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30, **extra)


def status_error(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value


# --------------------------------------------------------------------------- the reply (pure)


def answer(reply: str = "According to the sources:\n“700 of 770 threatened to quit.” [1]") -> Answer:
    passage = Passage(
        text="700 of 770 threatened to quit.",
        score=0.9,
        lang="en",
        doc_id="d1",
        title="OpenAI [staff] <b>revolt</b>",
        source="en-staff.jsonl#3",
        start=10,
        end=40,
        url="https://www.example.com/news/staff",
        date="2023-11-20T09:00:00Z",
        outlet="example.com",
    )
    citation = Citation(
        n=1, passage=passage, evidence=passage.text, evidence_lang="en", evidence_start=10, evidence_end=40
    )
    return Answer(question="How many?", lang="en", reply=reply, citations=[citation], found=True)


def test_message_text_has_markers_and_one_line_per_source_with_date_and_outlet():
    text = reply_text(answer())
    reply, sources = text.split("\n\nSources:\n")
    assert reply.endswith("quit.” [1]")
    assert sources == (
        r"[1] OpenAI \[staff\] \<b\>revolt\</b\> — example.com, 2023-11-20 — en-staff.jsonl#3, "
        "https://www.example.com/news/staff"
    )


def test_corpus_markup_in_the_message_text_is_inert():
    text = reply_text(answer("Quote: ![x](http://tracker.example/p.png) <img src=x> `code` [2] [1]"))
    unescaped = re.compile(r"(?<!\\)(?:!\[|<img|`)")  # a link, an image, HTML or code, not escaped
    assert not unescaped.search(text), text
    assert r"!\[x\](http" in text and r"\<img src=x\>" in text
    assert text.split("\n")[0].endswith(r"\[2\] [1]")  # only the answer's own markers stay links


def test_stream_pieces_join_back_to_the_text():
    for text in ["", "one", "a b  c\nd " * 30, "日本語の文章です。" * 10]:
        parts = list(pieces(text))
        assert "".join(parts) == text and len(parts) <= 30


def test_streamed_chunks_carry_the_same_text_and_the_citations_last():
    events = list(chunks(answer()))
    assert events[-1] == "data: [DONE]\n\n"
    objects = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert objects[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(o["choices"][0]["delta"].get("content", "") for o in objects)
    assert text == completion(answer())["choices"][0]["message"]["content"]
    assert objects[-1]["choices"][0]["finish_reason"] == "stop"
    assert objects[-1]["citations"][0]["passage"]["date"] == "2023-11-20T09:00:00Z"
    assert len({o["id"] for o in objects}) == 1


def test_the_user_messages_before_the_last_are_the_history():
    request = ChatRequest.model_validate(
        {
            "model": "qa",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Who is Nadella?"},
                {"role": "assistant", "content": "The CEO [1]"},
                {"role": "user", "content": [{"type": "text", "text": "And Altman?"}]},
            ],
        }
    )
    assert conversation(request) == ("And Altman?", ["Who is Nadella?"])
    many = [{"role": "user", "content": f"q{n}"} for n in range(80)]
    question, history = conversation(ChatRequest.model_validate({"model": "qa", "messages": many}))
    assert question == "q79" and history == [f"q{n}" for n in range(29, 79)]  # the latest 50
    with pytest.raises(ChatError, match=r"messages\[1\] has a `image_url` part"):
        conversation(
            ChatRequest.model_validate(
                {
                    "model": "qa",
                    "messages": [
                        {"role": "user", "content": "Hi"},
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                    ],
                }
            )
        )


# --------------------------------------------------------------------------- /v1 over HTTP


def test_models_lists_qa(base):
    assert [m.id for m in client(base).models.list()] == ["qa"]


@pytest.mark.parametrize(
    "request_, status, code, words",
    [
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "Who?"}]},
            404,
            "model_not_found",
            "'gpt-4o'",
        ),
        (
            {"model": "qa", "messages": [{"role": "system", "content": "x"}]},
            400,
            "no_user_message",
            "no user",
        ),
        (
            {
                "model": "qa",
                "messages": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "x"}],
            },
            400,
            "invalid_last_message",
            "messages[1]",
        ),
        ({"model": "qa", "messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_role", "'tool'"),
        (
            {"model": "qa", "messages": [{"role": "user", "content": "x" * 2001}]},
            400,
            "invalid_question",
            "2001",
        ),
        ({"model": "qa", "messages": [{"role": "user", "content": "?!"}]}, 400, "invalid_question", "letter"),
        ({"model": "qa", "messages": []}, 400, "invalid_request", "messages"),
        (
            {"model": "qa", "messages": [{"role": "user", "content": "Who?"}], "n": 2},
            400,
            "invalid_n",
            "n is 2",
        ),
    ],
)
def test_bad_requests_get_a_clear_openai_error(base, request_, status, code, words):
    error = status_error(lambda: client(base).chat.completions.create(**request_))
    assert error.status_code == status
    assert error.body["code"] == code and error.body["type"] == "invalid_request_error", error.body
    assert words in error.body["message"], error.body


def test_malformed_and_oversized_bodies_get_openai_errors(base):
    r = httpx.post(
        f"{base}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = {"model": "qa", "messages": [{"role": "user", "content": "x" * 70_000}]}
    r = httpx.post(f"{base}/v1/chat/completions", json=big)
    assert r.status_code == 413, r.text
    assert (
        r.json()["error"]["code"] == "request_too_large"
        and "QA_MAX_BODY_BYTES" in r.json()["error"]["message"]
    )


def test_not_ready_is_a_503_in_openai_shape_with_retry_after(base):
    r = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "qa", "messages": [{"role": "user", "content": "Who?"}]}
    )
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["type"] == "server_error" and "index" in r.json()["error"]["message"]
    assert "/" not in r.json()["error"]["message"].replace("(QA_", "")  # no server path


def users_settings(tmp_path, **extra):
    users = tmp_path / "users.txt"
    users.write_text("alice:s3cret\n", encoding="utf-8")
    return settings_for(tmp_path, users_file=users, **extra)


BASIC = "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_auth_applies_to_v1_and_mcp(tmp_path):
    with serving(create_app(users_settings(tmp_path))) as url:
        error = status_error(lambda: client(url).models.list())
        assert error.status_code == 401 and error.body["type"] == "authentication_error", error.body
        signed_in = client(url, default_headers={"Authorization": BASIC})
        assert [m.id for m in signed_in.models.list()] == ["qa"]
        with pytest.raises(Exception) as refused:  # the MCP client gets a 401: no session
            run_async(list_tools(url + "/gradio_api/mcp/"))
        assert "401" in repr(refused.value) or "Unauthorized" in repr(refused.value), repr(refused.value)
        tools = run_async(list_tools(url + "/gradio_api/mcp/", {"Authorization": BASIC}))
        assert sorted(tools) == ["ask", "search"]


# --------------------------------------------------------------------------- MCP over HTTP


@contextlib.asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """An initialized session of the real MCP client with the server at `url`."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(60, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def list_tools(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with mcp_session(url, headers) as session:
        return {tool.name: tool for tool in (await session.list_tools()).tools}


async def call_tool(url: str, name: str, arguments: dict, headers: dict[str, str] | None = None) -> Any:
    async with mcp_session(url, headers) as session:
        return await session.call_tool(name, arguments)


def test_mcp_tools_are_typed_and_described(base):
    tools = run_async(list_tools(base + "/gradio_api/mcp/"))
    assert sorted(tools) == ["ask", "search"]
    search = tools["search"].inputSchema
    assert search["properties"]["k"]["type"] == "integer" and search["properties"]["k"]["default"] == 5
    assert (
        search["required"] == ["question"]
        and "any language" in search["properties"]["question"]["description"]
    )
    ask = tools["ask"]
    assert "[n] markers" in ask.description and "date" in ask.description and "offsets" in ask.description
    assert ask.inputSchema["required"] == ["question"] and "history" in ask.inputSchema["properties"]


def test_mcp_tool_errors_are_messages(base):
    result = run_async(call_tool(base + "/gradio_api/mcp/", "search", {"question": "Who?", "k": 500}))
    assert result.isError and "k: Input should be less than or equal to 100" in result.content[0].text
    result = run_async(call_tool(base + "/gradio_api/mcp/", "ask", {"question": "Who?"}))
    assert result.isError and "cannot answer right now" in result.content[0].text  # not ready: said so


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/gradio_api/mcp/"),  # Gradio's landing page, which would show a forged Host
        ("GET", "/gradio_api/mcp"),
        ("DELETE", "/gradio_api/mcp/"),
        ("GET", "/gradio_api/mcp/sse"),
        ("POST", "/gradio_api/mcp/messages/"),
        ("GET", "/gradio_api/mcp/schema"),
    ],
)
def test_mcp_sse_transport_and_schema_stay_closed(base, method, path):
    r = httpx.request(method, base + path, json={} if method == "POST" else None)
    assert r.status_code == 404, (path, r.status_code)


def tool_call(url: str, question: str) -> httpx.Response:
    """One MCP tools/call as a raw JSON-RPC POST (stateless server: no session needed)."""
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "search", "arguments": {"question": question}},
    }
    return httpx.post(url + "/gradio_api/mcp/", json=message, headers=MCP_ACCEPT, timeout=10)


def test_chat_and_mcp_tool_calls_share_the_admission_bound(tmp_path):
    # The waiting question must outlast the refused requests sent behind it, even on a loaded
    # machine, so its deadline is seconds, not a fraction of one.
    settings = settings_for(tmp_path, queue_concurrency=1, queue_max_size=1, queue_wait_seconds=3)
    app = create_app(settings)
    service = app.state.qa
    chat = {"model": "qa", "messages": [{"role": "user", "content": "Who?"}]}
    with serving(app) as url:
        mark_ready(service)
        service.admission.acquire_blocking()  # the one slot is busy
        try:
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=chat, timeout=10)
                while service.admission.waiting() < 1:
                    time.sleep(0.005)
                # The bound of one waiting is reached: refused at once, the tool call too.
                refused = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=10)
                assert refused.status_code == 503 and refused.headers["retry-after"]
                assert refused.json()["error"]["code"] == "busy", refused.text
                assert "QA_QUEUE_MAX_SIZE=1" in refused.json()["error"]["message"]
                assert tool_call(url, "Who?").status_code == 503
                # The protocol's other requests take no slot.
                assert sorted(run_async(list_tools(url + "/gradio_api/mcp/"))) == ["ask", "search"]
                gave_up = waiting.result()
                assert (
                    gave_up.status_code == 503
                    and "QA_QUEUE_WAIT_SECONDS" in gave_up.json()["error"]["message"]
                )
        finally:
            service.admission.release()
        assert service.admission.waiting() == 0


def test_chat_completions_and_mcp_requests_count_for_the_rate_limit(tmp_path):
    with serving(create_app(settings_for(tmp_path, rate_limit_per_minute=2))) as url:
        assert tool_call(url, "Who?").status_code == 200  # a tool error (not ready), counted
        error = status_error(
            lambda: client(url).chat.completions.create(
                model="qa", messages=[{"role": "user", "content": "Who?"}]
            )
        )
        assert error.status_code == 503  # not ready, counted
        error = status_error(
            lambda: client(url).chat.completions.create(
                model="qa", messages=[{"role": "user", "content": "Who?"}]
            )
        )
        assert error.status_code == 429 and error.body["type"] == "rate_limit_error", error.body
        assert "2 per minute" in error.body["message"] and error.response.headers["retry-after"]
        assert tool_call(url, "Who?").status_code == 429
        assert [m.id for m in client(url).models.list()] == ["qa"]  # not a question: not counted


def test_openapi_documents_v1_with_resolvable_schemas(base):
    document = httpx.get(base + "/openapi.json").json()
    assert {"/v1/models", "/v1/chat/completions"} <= set(document["paths"])
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert "messages" in body["schema"]["properties"]
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(document))
    assert all(ref.startswith("#/components/schemas/") for ref in refs), refs


def test_an_mcp_tool_call_runs_in_the_slot_its_request_was_admitted_with(tmp_path):
    # One slot: a tool that took a second one would wait for itself, then time out.
    settings = settings_for(tmp_path, queue_concurrency=1, queue_max_size=1, queue_wait_seconds=1)
    app = create_app(settings)
    with serving(app) as url:
        mark_ready(app.state.qa)  # past the admission bound, the missing index is the error
        result = run_async(call_tool(url + "/gradio_api/mcp/", "search", {"question": "Who?"}))
        assert result.isError and "QA_QUEUE_WAIT_SECONDS" not in result.content[0].text, result.content
        assert "index" in result.content[0].text.lower(), result.content
        deadline = time.monotonic() + 10  # the slot comes back once the request's handler returns
        while app.state.qa.admission._free != 1:
            assert time.monotonic() < deadline, "the tool call's slot was not given back"
            time.sleep(0.01)
