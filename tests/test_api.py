"""The REST API and Gradio's API of a real running server (real model, real corpus).

One server per module; the index of corpus/ is built once per session.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser.live import start_server

pytestmark = pytest.mark.slow

JA = "OpenAIの従業員770人のうち何人が辞めると脅したのか？"
ES = "¿Cuántos empleados de OpenAI amenazaron con dimitir para irse a Microsoft?"
EVIL = "http://evil.example"
STAFF_WORDS = ("770", "700", "employés", "Mitarbeiter", "従業員", "empleados", "employees", "personnel")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_healthz_reports_the_loaded_index(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["index_version"].startswith("v-")
    assert health["passages"] > 10 and health["model"]


def test_search_returns_passages(client):
    response = client.get("/api/v1/search", params={"q": JA, "k": 3})
    assert response.status_code == 200, response.text
    passages = response.json()
    assert len(passages) == 3
    assert {"text", "score", "lang", "doc_id", "title", "source", "start", "end", "translations"} <= set(
        passages[0]
    )
    assert any("770" in p["text"] for p in passages)


def test_ask_answers_in_the_language_of_the_question_citing_a_relevant_passage(client):
    from qa.i18n import LEAD_IN

    response = client.post("/api/v1/ask", json={"question": ES})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["found"] is True and answer["lang"] == "es"
    assert answer["reply"].startswith(LEAD_IN["es"]) and "[1]" in answer["reply"]
    # The first citation is about OpenAI's staff threatening to leave, in whichever language.
    first = answer["citations"][0]
    text = " ".join([first["passage"]["text"], *(t["text"] for t in first["passage"]["translations"])])
    assert first["n"] == 1 and any(word in text for word in STAFF_WORDS), text[:300]


def test_ask_follow_up_uses_history(client):
    response = client.post("/api/v1/ask", json={"question": "Et Microsoft ?", "history": [JA]})
    assert response.status_code == 200, response.text
    assert response.json()["lang"] in {"fr", "en", "ja"}


@pytest.mark.parametrize(
    "body",
    [{"question": ""}, {"question": "   "}, {"question": "x" * 2001}, {}, {"question": "ok", "extra": 1}],
)
def test_ask_rejects_unusable_questions_with_422(client, body):
    response = client.post("/api/v1/ask", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("params", [{"q": ""}, {"q": "x" * 2001}, {"q": "ok", "k": 0}, {"q": "ok", "k": 101}])
def test_search_rejects_bad_parameters_with_422(client, params):
    response = client.get("/api/v1/search", params=params)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/search", "/api/v1/ask"} <= set(schema["paths"])
    assert "AskRequest" in schema["components"]["schemas"] and "Answer" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_security_headers_on_the_live_server(client):
    response = client.get("/api/v1/search", params={"q": JA}, headers={"Origin": EVIL})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


def test_gradio_client_predict(server):
    from gradio_client import Client

    gradio = Client(server.url + "/", verbose=False, download_files=False)
    answer = gradio.predict(JA, [], api_name="/ask")
    assert answer["found"] is True and "[1]" in answer["reply"]
    assert re.search(r"[\u3040-\u30ff]", answer["reply"])  # Japanese kana
    passages = gradio.predict(JA, 2, api_name="/search")
    assert len(passages) == 2 and passages[0]["text"]


def test_auth_header_closes_everything_but_healthz(seed_settings, tmp_path_factory):
    live = start_server(
        seed_settings.index_dir,
        tmp_path_factory.mktemp("api-auth"),
        env={"QA_AUTH_HEADER": "X-Forwarded-User"},
    )
    try:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            bundle = c.get("/embed/gradio.js", headers={"X-Forwarded-User": "a"}).text.split('"')[1]
            routes = [
                ("GET", "/", None),
                ("GET", "/config", None),
                ("GET", "/gradio_api/info", None),
                ("GET", "/embed/gradio.js", None),
                ("GET", "/assets/" + bundle.removeprefix("../assets/"), None),
                ("GET", "/docs", None),
                ("GET", "/openapi.json", None),
                ("GET", "/api/v1/search?q=Microsoft", None),
                ("POST", "/api/v1/ask", {"question": "Microsoft?"}),
            ]
            for method, path, body in routes:
                denied = c.request(method, path, json=body)
                assert denied.status_code == 401, path
                allowed = c.request(method, path, json=body, headers={"X-Forwarded-User": "alice"})
                assert allowed.status_code == 200, (path, allowed.text[:200])
            assert c.get("/healthz").status_code == 200
    finally:
        live.stop()
