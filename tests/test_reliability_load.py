"""Load on a real `qa serve` (real model, real corpus): 32 concurrent clients for a bounded time,
and overload at 4x the admission bound.

    python -m pytest tests/test_reliability_load.py -m slow -s

The run lasts QA_LOAD_SECONDS (default 60: the service must hold a minute of it; 20 is enough
for a quick local check); the overload QA_OVERLOAD_SECONDS (default 20). p50/p95 latency,
throughput, the server's RSS growth and the overload figures are printed and written to
artifacts/load.json.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.browser.live import save_figures, start_server

pytestmark = pytest.mark.slow

CLIENTS = 32
LOAD_SECONDS = float(os.environ.get("QA_LOAD_SECONDS", "60"))
OVERLOAD_SECONDS = float(os.environ.get("QA_OVERLOAD_SECONDS", "20"))
CLIENT_TIMEOUT = 120  # a request slower than this counts as a hang
RSS_GROWTH_LIMIT_MB = 150
FIGURES: dict[str, object] = {}


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (psutil when installed, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no VmRSS for process {pid}") from None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@pytest.fixture(scope="module", autouse=True)
def record_figures():
    yield
    save_figures("load.json", FIGURES)


@pytest.fixture(scope="module")
def questions(seed_facts) -> list[tuple[str, str]]:
    """(language, question) for every seed question: 46 questions in 10 languages."""
    return [(lang, q) for fact in seed_facts for lang, q in fact["questions"].items()]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    busy: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, seconds: float, problem: str | None = None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.latencies.append(seconds)
            if problem:
                self.problems.append(problem)


def one_request(client: httpx.Client, lang: str, question: str, rng: random.Random, tally: Tally) -> None:
    search = rng.random() < 0.25
    started = time.perf_counter()
    try:
        if search:
            r = client.get("/api/v1/search", params={"q": question, "k": 3})
        else:
            r = client.post("/api/v1/ask", json={"question": question})
    except httpx.TimeoutException:
        tally.add(-1, 0, f"hang: no answer in {CLIENT_TIMEOUT} s to {question!r}")
        return
    except httpx.HTTPError as exc:
        tally.add(-2, 0, f"transport error {exc!r}")
        return
    seconds = time.perf_counter() - started
    problem = None
    if r.status_code == 200:
        body = r.json()
        if search:
            if not (isinstance(body, list) and len(body) == 3 and all(p["text"] for p in body)):
                problem = f"search {question!r}: {str(body)[:200]}"
        elif body["question"] != question or body["lang"] != lang:
            problem = f"answer for {body['question']!r} ({body['lang']}) to {question!r} ({lang})"
    elif r.status_code == 503:
        detail = r.json().get("detail", "")  # must be JSON with a message
        if "waiting" not in detail:
            problem = f"503 that is not 'queue full': {r.text[:200]}"
    elif r.status_code != 429:  # anything else (a 500, a 4xx) is a failure
        problem = f"{r.status_code}: {r.text[:200]}"
    tally.add(r.status_code, seconds, problem)


def hammer(url: str, questions: list[tuple[str, str]], seconds: float, clients: int) -> tuple[Tally, float]:
    tally = Tally()
    deadline = time.monotonic() + seconds

    def client_loop(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
            while time.monotonic() < deadline:
                lang, question = rng.choice(questions)
                one_request(client, lang, question, rng, tally)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return tally, time.perf_counter() - started


def test_32_clients_get_answers_to_their_own_questions(server, questions):
    pid = server.process.pid
    # Warm up: every question once (query cache, lazy per-language indexes, allocator pools).
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
        for lang, question in questions:
            assert client.post("/api/v1/ask", json={"question": question}).status_code == 200
    rss_before = rss_mb(pid)

    tally, elapsed = hammer(server.url, questions, LOAD_SECONDS, CLIENTS)
    rss_after = rss_mb(pid)

    answered = len(tally.latencies)
    figures = {
        "clients": CLIENTS,
        "seconds": LOAD_SECONDS,
        "wall_seconds": round(elapsed, 1),
        "requests": sum(tally.statuses.values()),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "answered": answered,
        "throughput_per_s": round(answered / elapsed, 2),
        "p50_s": round(percentile(tally.latencies, 50), 3) if answered else None,
        "p95_s": round(percentile(tally.latencies, 95), 3) if answered else None,
        "max_s": round(max(tally.latencies), 3) if answered else None,
        "rss_before_mb": round(rss_before),
        "rss_after_mb": round(rss_after),
        "rss_growth_mb": round(rss_after - rss_before, 1),
    }
    FIGURES["load"] = figures
    print("\nload:", json.dumps(figures))
    assert not tally.problems, tally.problems[:5]
    assert answered >= CLIENTS, f"only {answered} answers in {elapsed:.0f} s"
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MB, figures


def test_chat_queue_serves_concurrent_gradio_clients(server, questions):
    from gradio_client import Client

    picks = [q for q in questions if q[0] in {"en", "es", "ja", "zh"}][:4]

    def ask(pick: tuple[str, str]) -> tuple[tuple[str, str], dict, float]:
        started = time.perf_counter()
        answer = Client(server.url + "/", verbose=False, download_files=False).predict(
            pick[1], [], api_name="/ask"
        )
        return pick, answer, time.perf_counter() - started

    with ThreadPoolExecutor(len(picks)) as pool:
        results = list(pool.map(ask, picks))
    for (lang, question), answer, _ in results:
        assert answer["question"] == question and answer["lang"] == lang, answer
        assert answer["reply"]
    FIGURES["gradio"] = {"clients": len(picks), "max_s": round(max(s for *_, s in results), 2)}


def test_small_queue_says_busy_quickly_never_hangs(seed_settings, tmp_path_factory, questions):
    live = start_server(
        seed_settings.index_dir,
        tmp_path_factory.mktemp("small-queue"),
        env={"QA_QUEUE_MAX_SIZE": "2", "QA_QUEUE_CONCURRENCY": "1"},
    )
    try:
        busy: list[float] = []
        answered: list[float] = []
        problems: list[str] = []
        lock = threading.Lock()

        def ask(n: int) -> None:
            _, question = questions[n % len(questions)]
            started = time.perf_counter()
            try:
                r = httpx.post(f"{live.url}/api/v1/ask", json={"question": question}, timeout=60)
            except httpx.TimeoutException:
                with lock:
                    problems.append(f"hang on {question!r}")
                return
            seconds = time.perf_counter() - started
            with lock:
                if r.status_code == 503:
                    body = r.json()
                    if "QA_QUEUE_MAX_SIZE" not in body["detail"] or "retry-after" not in r.headers:
                        problems.append(f"unclear 503: {r.text[:200]}")
                    busy.append(seconds)
                elif r.status_code == 200:
                    answered.append(seconds)
                else:
                    problems.append(f"{r.status_code}: {r.text[:200]}")

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(ask, range(16)))
    finally:
        live.stop()
    FIGURES["small_queue"] = {
        "clients": 16,
        "answered": len(answered),
        "busy_503": len(busy),
        "busy_max_s": round(max(busy), 2) if busy else None,
    }
    print("\nsmall queue:", FIGURES["small_queue"])
    assert not problems, problems[:5]
    assert busy, "16 simultaneous questions on a queue of 2 were never refused"
    assert answered, "nobody got an answer"
    assert max(busy) < 10, f"a 'queue full' answer took {max(busy):.1f} s"


# --------------------------------------------------------------------------- overload

# A small bound, so that 4x it is a load a 2-core machine can generate, yet more clients than
# the server's 40 worker threads (where requests used to wait, unseen by the bound): 1 question
# answered at a time, 16 waiting, none for more than 10 s. 4 x (1 + 16) = 68 clients, each
# asking again as soon as it has its answer (or its 503), through the REST and Gradio APIs.
OVERLOAD_ENV = {"QA_QUEUE_CONCURRENCY": "1", "QA_QUEUE_MAX_SIZE": "16", "QA_QUEUE_WAIT_SECONDS": "10"}
REFUSAL_LIMIT_S = 0.050  # a "busy" 503 comes at once: within 50 ms (see overload's test)
HEALTH_LIMIT_S = 0.100  # /healthz never waits behind questions: p95 under 100 ms
RETRY_PAUSE_S = 0.25  # a refused client asks again after this


@dataclass
class Overload:
    admitted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)  # 503 "busy", at the door
    refused_in_app: list[float] = field(default_factory=list)  # the same, its Server-Timing
    gave_up: list[float] = field(default_factory=list)  # 503 after waiting QA_QUEUE_WAIT_SECONDS
    health: list[float] = field(default_factory=list)
    by_route: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, outcome: str, seconds: float, problem: str | None = None) -> None:
        with self.lock:
            counts = self.by_route.setdefault(route, {})
            counts[outcome] = counts.get(outcome, 0) + 1
            {"admitted": self.admitted, "refused": self.refused, "gave_up": self.gave_up}.get(
                outcome, []
            ).append(seconds)
            if problem:
                self.problems.append(problem)


def _busy(detail: str) -> str | None:
    """'refused' (queue full), 'gave_up' (waited too long) or None for a 503 that is neither."""
    if "QA_QUEUE_MAX_SIZE" in detail or "waiting" in detail or "Queue is full" in detail:
        return "refused"
    if "QA_QUEUE_WAIT_SECONDS" in detail:
        return "gave_up"
    return None


def _app_seconds(response: httpx.Response) -> float | None:
    """The server's own time for a response, from its `Server-Timing: app;dur=<ms>`."""
    for part in response.headers.get("server-timing", "").split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:]) / 1000
    return None


def _gradio_ask(client: httpx.Client, question: str) -> tuple[int, str, object]:
    """(status of the join, error or '', the answer or the refusal) through Gradio's `/call/ask`."""
    r = client.post("/gradio_api/call/ask", json={"data": [question]})
    if r.status_code != 200:
        return r.status_code, r.json().get("detail", r.text), r
    stream = client.get(f"/gradio_api/call/ask/{r.json()['event_id']}").text
    event = data = ""
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = line.split(":", 1)[1].strip()
    if event == "complete":
        return 200, "", json.loads(data)[0]
    return 503 if event == "error" else 500, json.loads(data).get("error") or stream[:300], None


def overload_client(
    url: str, questions, n: int, deadline: float, tally: Overload, retry: bool = False
) -> None:
    """One client: asks, then asks again at once, until `deadline` (REST ask, search, Gradio ask)."""
    rng = random.Random(1000 + n)
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() < deadline:
            lang, question = rng.choice(questions)
            route = rng.choice(["rest-ask", "rest-ask", "rest-search", "gradio-ask"])
            started = time.perf_counter()
            try:
                if route == "gradio-ask":
                    status, detail, answer = _gradio_ask(client, question)
                elif route == "rest-ask":
                    r = client.post("/api/v1/ask", json={"question": question})
                    status, answer = r.status_code, r.json()
                    detail = answer.get("detail", "") if isinstance(answer, dict) else ""
                else:
                    r = client.get("/api/v1/search", params={"q": question, "k": 3})
                    status, answer = r.status_code, r.json()
                    detail = answer.get("detail", "") if isinstance(answer, dict) else ""
                if route != "gradio-ask":
                    answer = r if status == 503 else answer
            except httpx.HTTPError as exc:
                tally.add(route, "lost", 0, f"{route}: no answer to {question!r} ({exc!r})")
                continue
            seconds = time.perf_counter() - started
            if status == 200:
                problem = None
                if route == "rest-search":
                    if not (isinstance(answer, list) and len(answer) == 3):
                        problem = f"search {question!r}: {str(answer)[:200]}"
                elif answer["question"] != question or answer["lang"] != lang:
                    problem = f"{route}: answer for {answer['question']!r} to {question!r}"
                tally.add(route, "admitted", seconds, problem)
            elif status == 503 and _busy(detail):
                tally.add(route, _busy(detail), seconds)  # type: ignore[arg-type]
                in_app = _app_seconds(answer) if isinstance(answer, httpx.Response) else None
                if in_app is not None and _busy(detail) == "refused":
                    with tally.lock:
                        tally.refused_in_app.append(in_app)
                # Asks again soon, far sooner than Retry-After says (a client that retries at
                # once turns the test into a measure of how fast the clients can spin).
                time.sleep(RETRY_PAUSE_S)
            else:
                tally.add(route, str(status), seconds, f"{route} {status}: {detail[:200]}")


def probe_health(url: str, deadline: float, tally: Overload) -> None:
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            r = client.get("/healthz")
            seconds = time.perf_counter() - started
            with tally.lock:
                tally.health.append(seconds)
                if r.status_code != 200:
                    tally.problems.append(f"/healthz {r.status_code}: {r.text[:200]}")
            time.sleep(0.1)


def overload(url: str, questions, clients: int, seconds: float) -> Overload:
    """`clients` clients and one /healthz probe against `url` for `seconds`."""
    tally = Overload()
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(clients + 1) as pool:
        jobs = [pool.submit(overload_client, url, questions, n, deadline, tally) for n in range(clients)]
        jobs.append(pool.submit(probe_health, url, deadline, tally))
        for job in jobs:
            job.result()
    return tally


def overload_figures(tally: Overload, clients: int, seconds: float) -> dict[str, object]:
    def ms(values: list[float], p: float) -> float | None:
        return round(percentile(values, p) * 1000, 1) if values else None

    return {
        "clients": clients,
        "seconds": seconds,
        "by_route": tally.by_route,
        "admitted": len(tally.admitted),
        "refused_503": len(tally.refused),
        "gave_up_503": len(tally.gave_up),
        "refused_p50_ms": ms(tally.refused, 50),
        "refused_p95_ms": ms(tally.refused, 95),
        "refused_max_ms": ms(tally.refused, 100),
        "refused_in_app_p50_ms": ms(tally.refused_in_app, 50),
        "refused_in_app_p95_ms": ms(tally.refused_in_app, 95),
        "refused_in_app_max_ms": ms(tally.refused_in_app, 100),
        "admitted_p50_ms": ms(tally.admitted, 50),
        "admitted_p99_ms": ms(tally.admitted, 99),
        "admitted_max_ms": ms(tally.admitted, 100),
        "gave_up_max_ms": ms(tally.gave_up, 100),
        "healthz_p50_ms": ms(tally.health, 50),
        "healthz_p95_ms": ms(tally.health, 95),
        "healthz_max_ms": ms(tally.health, 100),
        "problems": len(tally.problems),
    }


def test_overload_at_4x_the_bound_is_answered_not_queued(seed_settings, tmp_path_factory, questions):
    live = start_server(seed_settings.index_dir, tmp_path_factory.mktemp("overload"), env=OVERLOAD_ENV)
    bound = int(OVERLOAD_ENV["QA_QUEUE_CONCURRENCY"]) + int(OVERLOAD_ENV["QA_QUEUE_MAX_SIZE"])
    wait = float(OVERLOAD_ENV["QA_QUEUE_WAIT_SECONDS"])
    try:
        with httpx.Client(base_url=live.url, timeout=CLIENT_TIMEOUT) as client:  # warm-up
            for _, question in questions:
                assert client.post("/api/v1/ask", json={"question": question}).status_code == 200
        tally = overload(live.url, questions, 4 * bound, OVERLOAD_SECONDS)
    finally:
        live.stop()
    figures = overload_figures(tally, 4 * bound, OVERLOAD_SECONDS)
    FIGURES["overload"] = figures
    print("\noverload:", json.dumps(figures))
    assert not tally.problems, tally.problems[:5]  # every answer for its own question, none lost
    assert tally.admitted and tally.refused, figures
    # A refusal is decided at once: 95 % within 50 ms in the server (its Server-Timing), and
    # half within 50 ms as the clients see it. The clients' p95 is printed, not asserted: on a
    # shared 2-core machine it is the CPU's run queue (load average 11: ~250 ms), where a
    # question queued in the old way waited seconds (tests/README.md has both).
    assert len(tally.refused_in_app) == len(tally.refused), figures
    assert percentile(tally.refused_in_app, 95) < REFUSAL_LIMIT_S, figures
    assert percentile(tally.refused, 50) < REFUSAL_LIMIT_S, figures
    assert percentile(tally.admitted, 99) < wait, figures
    assert percentile(tally.health, 95) < HEALTH_LIMIT_S, figures
    for route, counts in tally.by_route.items():  # each way in meets the same bound
        assert counts.get("admitted") and counts.get("refused"), (route, figures)
