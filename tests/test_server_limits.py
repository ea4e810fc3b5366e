"""The server's limits over real HTTP (httpx against uvicorn on 127.0.0.1): closed upload and
file routes, the body-size limit, strict Gradio API arguments, the one admission bound, no
server paths and no client-chosen origin in any response.

No model and no index: as in test_server_security.py, the app's index folder is empty and its
corpus missing, so it stays "not ready" (or is marked ready where a test needs the bound to be
reached before the index would be), which is all that the HTTP plumbing needs.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from qa.config import Settings
from qa.errors import BusyError
from qa.serve.admission import Admission
from qa.serve.api import public_message
from qa.serve.app import create_app
from tests.aio import run_async
from tests.test_server_security import serving, settings_for


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    with serving(create_app(settings_for(tmp, max_body_bytes=65536))) as url:
        yield url, tmp


def gradio_call(url: str, api: str, data: object) -> tuple[int, str]:
    """(status, error message or answer) of Gradio's two-step `/gradio_api/call/<api>`."""
    r = httpx.post(f"{url}/gradio_api/call/{api}", json={"data": data}, timeout=30)
    if r.status_code != 200:
        return r.status_code, r.json()["detail"]
    stream = httpx.get(f"{url}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=30).text
    data_lines = [line[5:].strip() for line in stream.splitlines() if line.startswith("data:")]
    payload = json.loads(data_lines[-1])
    return (200, payload) if "event: complete" in stream else (422, payload.get("error"))


# --------------------------------------------------------------------------- closed routes

CLOSED = [
    ("POST", "/gradio_api/upload"),
    ("GET", "/gradio_api/upload_progress?upload_id=x"),
    ("GET", "/gradio_api/file=README.md"),
    ("HEAD", "/gradio_api/file=README.md"),
    ("GET", "/gradio_api/file/README.md"),
    ("GET", "/file=README.md"),
    ("GET", "/gradio_api/proxy=http://127.0.0.1/"),
    ("POST", "/gradio_api/run/ask"),
    ("POST", "/gradio_api/api/ask"),
    ("POST", "/gradio_api/component_server"),
    ("POST", "/gradio_api/process_recording"),
    ("GET", "/gradio_api/stream/x/y/z/playlist.m3u8"),
    ("GET", "/monitoring"),
]


@pytest.mark.parametrize("method, path", CLOSED)
def test_unused_gradio_routes_are_closed(base, method, path):
    url, _ = base
    r = httpx.request(method, url + path, json={"data": ["x"]} if method == "POST" else None)
    assert r.status_code in (404, 405), (path, r.status_code, r.text[:200])


def test_upload_is_refused_and_nothing_is_served_back(base):
    url, _ = base
    files = {"files": ("page.html", b"<script>alert(1)</script>", "text/html")}
    r = httpx.post(f"{url}/gradio_api/upload", files=files)
    assert r.status_code == 404 and "Not found" in r.json()["detail"]
    assert b"alert" not in httpx.get(f"{url}/gradio_api/file=page.html").content


def test_closed_routes_stay_closed_for_signed_in_users(tmp_path):
    app = create_app(settings_for(tmp_path, auth_header="X-Forwarded-User"))
    with serving(app) as url:
        signed_in = {"X-Forwarded-User": "alice"}
        files = {"files": ("a.txt", b"hello")}
        assert httpx.post(f"{url}/gradio_api/upload", files=files, headers=signed_in).status_code == 404
        assert httpx.post(f"{url}/gradio_api/upload", files=files).status_code == 404  # not even asked
        assert httpx.get(f"{url}/gradio_api/file=a.txt", headers=signed_in).status_code == 404
        assert httpx.get(f"{url}/config", headers=signed_in).status_code == 200  # the rest is open


# --------------------------------------------------------------------------- body size

BODY_ROUTES = ["/api/v1/ask", "/gradio_api/call/ask", "/gradio_api/queue/join", "/gradio_api/call/search"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_larger_content_length_is_refused_before_the_body_is_sent(base, path):
    url, _ = base
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # Headers only: the server must answer without waiting for the 50 MB it was promised.
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 2**20}\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read().decode()
    assert response.status == 413, body[:200]
    assert "QA_MAX_BODY_BYTES" in body and time.perf_counter() - started < 5


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_streamed_body_is_counted_and_cut_off(base, path):
    url, _ = base

    def chunks():  # no Content-Length: chunked, 100 KB at a time, 3 MB in all
        for _ in range(30):
            yield b" " * 100_000

    r = httpx.post(url + path, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]


def test_bodies_under_the_limit_get_through(base):
    url, _ = base
    r = httpx.post(f"{url}/api/v1/ask", json={"question": "Who?", "history": ["x" * 2000] * 20})
    assert r.status_code == 503 and "index" in r.json()["detail"]  # past the limit: not ready yet


def test_a_huge_question_over_the_gradio_api_is_refused_early(base):
    url, _ = base
    status, detail = gradio_call(url, "ask", ["x" * 20_000_000])
    assert status == 413 and "QA_MAX_BODY_BYTES" in detail


# --------------------------------------------------------------------------- Gradio API arguments

BAD_ARGUMENTS = [
    ("search", ["Microsoft?", 3.7], "k: Input should be a valid integer"),
    ("search", ["Microsoft?", True], "k: Input should be a valid integer"),
    ("search", ["Microsoft?", "3"], "k: Input should be a valid integer"),
    ("search", ["Microsoft?", 0], "k: Input should be greater than or equal to 1"),
    ("search", ["Microsoft?", 101], "k: Input should be less than or equal to 100"),
    ("search", [None], "question: Input should be a valid string"),
    ("search", [], "/search takes `data`: a list of 1 to 6 values"),
    ("search", ["a", 3, [], "", "", [], 7], "not 7 values"),
    ("search", ["a", 3, 4], "langs: Input should be a valid list"),
    ("search", ["a", 3, ["english"]], "english&#x27; is not a language code"),  # (Gradio escapes quotes)
    ("search", ["a", 3, [], "2024-06-01", "2024-01-01"], "since 2024-06-01 is after until 2024-01-01"),
    ("search", "Microsoft?", "not str"),
    ("ask", [3], "question: Input should be a valid string"),
    ("ask", ["ok?", ["earlier"] * 51], "history: List should have at most 50 items"),
    ("ask", ["ok?", ["x" * 2001]], "history item 1 is 2001 characters long; the limit is 2000"),
    ("ask", ["ok?", [3]], "history.0: Input should be a valid string"),
    ("ask", ["ok?", "earlier"], "history: Input should be a valid list"),
    ("ask", ["   "], "empty"),
    ("ask", ["y" * 2001], "2001"),
    ("ask", [], "/ask takes `data`: a list of 1 to 6 values [question, history (default []), langs (default [])"),
    ("ask", ["ok?", [], [], "next week"], "next week&#x27; is not a date"),
]


@pytest.mark.parametrize("api, data, message", BAD_ARGUMENTS)
def test_gradio_api_arguments_are_checked_as_strictly_as_rest(base, capfd, api, data, message):
    url, _ = base
    status, detail = gradio_call(url, api, data)
    assert status == 422 and message in (detail or ""), (status, detail)
    err = capfd.readouterr().err
    assert "Traceback" not in err and 'File "' not in err  # one log line, no traceback


def test_gradio_api_fills_in_optional_arguments(base):
    url, _ = base
    # Only the question: well-formed, so it reaches the readiness check.
    for api in ("ask", "search"):
        status, detail = gradio_call(url, api, ["Who did Microsoft hire?"])
        assert status == 422 and "cannot answer" in detail, detail


# --------------------------------------------------------------------------- nothing of the server


def test_no_server_paths_in_healthz_or_503_bodies(base):
    url, tmp = base
    for r in (httpx.get(f"{url}/healthz"), httpx.get(f"{url}/api/v1/search", params={"q": "Who?"})):
        assert r.status_code == 503
        assert str(tmp) not in r.text and "/tmp" not in r.text and "no-corpus" in r.text, r.text
    _, detail = gradio_call(url, "ask", ["Who?"])
    assert str(tmp) not in str(detail)


def test_public_message_names_folders_by_setting_and_files_by_their_place():
    settings = Settings(index_dir="/srv/qa/index", corpus_dir="/data")
    assert public_message("No index in /srv/qa/index.", settings) == "No index in `index` (QA_INDEX_DIR)."
    assert public_message("/srv/qa/index/v-1/vectors.npy is short", settings) == "v-1/vectors.npy is short"
    assert public_message("corpus /data is empty", settings) == "corpus `data` (QA_CORPUS_DIR) is empty"
    assert public_message("cannot read /home/me/x/y.json.", settings) == "cannot read y.json."


FORGED = {"Host": "evil.example", "X-Forwarded-Host": "evil2.example", "X-Forwarded-Proto": "https"}


def test_a_forged_host_is_never_reflected(base):
    url, _ = base
    for path in ("/config", "/", "/gradio_api/info"):
        r = httpx.get(url + path, headers=FORGED)
        assert r.status_code == 200 and "evil" not in r.text, path
    assert httpx.get(f"{url}/config", headers=FORGED).json()["root"] == ""


def test_public_url_is_the_root_whatever_the_host(tmp_path):
    app = create_app(settings_for(tmp_path, public_url="https://intranet.example.com/qa/"))
    with serving(app) as url:
        assert httpx.get(f"{url}/config", headers=FORGED).json()["root"] == "https://intranet.example.com/qa"
        page = httpx.get(url + "/", headers=FORGED).text
        assert '"root":"https://intranet.example.com/qa"' in page and "evil" not in page


# --------------------------------------------------------------------------- the admission bound


def test_admission_refuses_past_the_bound_at_once_and_serves_in_order():
    admission = Admission(concurrency=1, max_waiting=2, wait_seconds=5)
    admission.acquire_blocking()
    order: list[int] = []

    def wait_then_note(n: int) -> None:
        with admission.enter():
            order.append(n)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(wait_then_note, 1)
        while admission.waiting() < 1:
            time.sleep(0.001)
        second = pool.submit(wait_then_note, 2)
        while admission.waiting() < 2:
            time.sleep(0.001)
        started = time.perf_counter()
        with pytest.raises(BusyError, match="QA_QUEUE_MAX_SIZE=2"):
            admission.acquire_blocking()
        assert time.perf_counter() - started < 0.05
        # One that Gradio's queue accepted already is never turned away here: it waits its turn.
        with pytest.raises(BusyError, match="QA_QUEUE_WAIT_SECONDS"):
            admission.acquire_blocking(0.05, queued=True)
        admission.release()
        first.result(5), second.result(5)
    assert order == [1, 2] and admission.waiting() == 0
    admission.acquire_blocking(0)  # every slot was given back


def test_admission_wait_has_a_deadline_for_threads_and_the_event_loop():
    admission = Admission(concurrency=1, max_waiting=4, wait_seconds=0.2)
    admission.acquire_blocking()
    with pytest.raises(BusyError, match="QA_QUEUE_WAIT_SECONDS"):
        admission.acquire_blocking()
    with pytest.raises(BusyError, match="QA_QUEUE_WAIT_SECONDS"):
        run_async(admission.acquire())
    assert admission.waiting() == 0  # those that gave up left the line

    async def handed_over() -> None:
        waiter = asyncio.create_task(admission.acquire(timeout=5))
        await asyncio.sleep(0.05)
        threading.Thread(target=admission.release).start()  # released from another thread
        await waiter

    run_async(handed_over())
    admission.release()
    admission.acquire_blocking(0)


def test_rest_questions_wait_on_the_event_loop_and_are_refused_at_once(tmp_path):
    settings = settings_for(tmp_path, queue_concurrency=1, queue_max_size=2, queue_wait_seconds=1)
    app = create_app(settings)
    admission = app.state.qa.admission
    with serving(app) as url:
        admission.acquire_blocking()  # the one slot is busy
        try:
            with ThreadPoolExecutor(8) as pool:
                replies = list(
                    pool.map(
                        lambda n: (
                            time.perf_counter(),
                            httpx.get(f"{url}/api/v1/search?q=Who{n}", timeout=10),
                        ),
                        range(8),
                    )
                )
                done = time.perf_counter()
            health = httpx.get(f"{url}/healthz", timeout=10)
        finally:
            admission.release()
    details = [r.json()["detail"] for _, r in replies]
    refused = [d for d in details if "QA_QUEUE_MAX_SIZE=2" in d]
    gave_up = [d for d in details if "QA_QUEUE_WAIT_SECONDS" in d]
    assert len(refused) == 6 and len(gave_up) == 2, details
    assert all(r.status_code == 503 and r.headers["retry-after"] for _, r in replies)
    for _, r in replies:  # the server's own time for a refusal: at once, not after a wait
        if "QA_QUEUE_MAX_SIZE" in r.json()["detail"]:
            assert float(r.headers["server-timing"].split("dur=")[1]) < 50, r.headers["server-timing"]
    assert done - min(t for t, _ in replies) < 5
    assert health.status_code == 503 and health.json()["status"] == "error"  # answered meanwhile


def mark_ready(service) -> None:
    """Once its loading has failed (no corpus), call the service ready: questions then get as
    far as the admission bound, and fail only past it (there is no index)."""
    deadline = time.monotonic() + 30
    while service.state != "error":
        assert time.monotonic() < deadline, service.state
        time.sleep(0.02)
    service.state = "ready"


def test_gradio_deadline_counts_the_time_in_gradios_queue(tmp_path):
    # Seconds, not a fraction of one, so that a loaded machine's overhead stays well inside the
    # gap between one deadline (3 s) and two (6 s).
    settings = settings_for(tmp_path, queue_concurrency=1, queue_max_size=4, queue_wait_seconds=3)
    app = create_app(settings)
    with serving(app) as url:
        mark_ready(app.state.qa)
        app.state.qa.admission.acquire_blocking()  # the one slot stays busy

        def timed(n: int) -> tuple[float, tuple[int, str]]:
            started = time.perf_counter()
            result = gradio_call(url, "ask", [f"Who {n}?"])
            return time.perf_counter() - started, result

        try:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(lambda: timed(1))
                time.sleep(0.1)
                second = pool.submit(lambda: timed(2))  # waits in Gradio's queue behind the first
                results = [first.result(), second.result()]
        finally:
            app.state.qa.admission.release()
    for seconds, (status, detail) in results:
        assert status == 422 and "QA_QUEUE_WAIT_SECONDS" in detail, detail
        assert 2.9 < seconds < 4.5, seconds  # not 3 s more for the second's time in the queue


def test_gradio_questions_share_the_bound_with_rest(tmp_path):
    # The REST question's wait must outlast the Gradio request sent behind it, even on a loaded
    # machine: with half a second it sometimes gave up first and the Gradio call found room.
    settings = settings_for(tmp_path, queue_concurrency=1, queue_max_size=1, queue_wait_seconds=3)
    app = create_app(settings)
    service = app.state.qa
    with serving(app) as url:
        mark_ready(service)
        service.admission.acquire_blocking()
        try:
            with ThreadPoolExecutor(1) as pool:
                # One REST question waits for the slot: the bound of one waiting is reached...
                rest = pool.submit(httpx.get, f"{url}/api/v1/search?q=Who", timeout=10)
                while service.admission.waiting() < 1:
                    time.sleep(0.005)
                # ...so a Gradio question is turned away at the door, with a Retry-After.
                r = httpx.post(f"{url}/gradio_api/call/ask", json={"data": ["Who?"]}, timeout=10)
                assert r.status_code == 503 and "QA_QUEUE_MAX_SIZE=1" in r.json()["detail"]
                assert r.headers["retry-after"]
                assert "QA_QUEUE_WAIT_SECONDS" in rest.result().json()["detail"]
            # Alone, it is queued, then waits for the slot no longer than its deadline.
            status, detail = gradio_call(url, "ask", ["Who?"])
            assert status == 422 and "QA_QUEUE_WAIT_SECONDS" in detail, detail
        finally:
            service.admission.release()


# --------------------------------------------------------------------------- the chat's events


def chat_event(url: str, data: object, session: str) -> tuple[int, object]:
    """(status, reply or error) of one chat question sent as the page sends it (queue/join)."""
    config = httpx.get(f"{url}/config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "respond")
    r = httpx.post(
        f"{url}/gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "session_hash": session},
        timeout=30,
    )
    if r.status_code != 200:
        return r.status_code, r.json()["detail"]
    with httpx.stream(
        "GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=30
    ) as s:
        for line in s.iter_lines():
            if "process_completed" in line:
                return 200, json.loads(line[5:])["output"]
    raise AssertionError("no process_completed")


@pytest.mark.parametrize(
    "data, message",
    [
        (["Who?", "not a conversation", None, [], "", "", ""], "data[1] (Chatbot)"),
        (["Who?", [{"role": "user", "content": 5}], None, [], "", "", ""], "data[1] (Chatbot): 0.content"),
        # The filter row's four values are part of every chat question.
        (["Who?", [], None], "`data` must be a list of 7 values, not 3 values"),
    ],
)
def test_malformed_chat_events_get_a_message_not_a_traceback(base, capfd, data, message):
    url, _ = base
    status, detail = chat_event(url, data, "hostile")
    assert status == 422 and message in detail, detail
    err = capfd.readouterr().err
    assert "Traceback" not in err and 'File "' not in err


@pytest.mark.parametrize(
    "filters, message",
    [
        ([[], "yesterday", "", ""], "since 'yesterday' is not a date"),
        ([["x y"], "", "", ""], "'x y' is not a language code"),
        ([5, "", "", ""], "langs must be a list of strings, not int"),
    ],
)
def test_bad_filters_of_a_chat_event_are_said_in_the_chat(base, capfd, filters, message):
    url, _ = base
    status, output = chat_event(url, ["Who resigned?", [], None, *filters], "filters")
    assert status == 200 and output.get("error") is None, output
    said = output["data"][1][-1]
    content = said["content"]  # Gradio sends a message's content as a list of parts
    text = " ".join(part.get("text", "") for part in content) if isinstance(content, list) else content
    assert said["role"] == "assistant" and message in text.replace("\\", ""), said
    err = capfd.readouterr().err
    assert "Traceback" not in err and 'File "' not in err


def test_a_conversation_goes_on_turn_after_turn(base):
    url, _ = base
    chat: list = []
    for turn in range(3):  # each turn sends back the conversation as the page holds it
        status, output = chat_event(url, [f"Question {turn}?", chat, None, [], "", "", ""], "turns")
        assert status == 200 and output.get("error") is None, output
        chat = output["data"][1]
    assert [m["role"] for m in chat] == ["user", "assistant"] * 3
