"""Load on a real `qa serve` (real model, real corpus): 32 concurrent clients for a bounded time.

    python -m pytest tests/test_reliability_load.py -m slow -s

The run lasts QA_LOAD_SECONDS (default 60: the service must hold a minute of it; 20 is enough
for a quick local check). p50/p95 latency, throughput and the server's RSS growth are
printed and written to artifacts/load.json.
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

from tests.browser.live import ARTIFACTS, start_server

pytestmark = pytest.mark.slow

CLIENTS = 32
LOAD_SECONDS = float(os.environ.get("QA_LOAD_SECONDS", "60"))
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
    if FIGURES:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "load.json").write_text(json.dumps(FIGURES, indent=2, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def questions(seed_facts) -> list[tuple[str, str]]:
    """(language, question) for every seed question: 46 questions in 10 languages."""
    return [(lang, q) for fact in seed_facts for lang, q in fact["questions"].items()]


@pytest.fixture(scope="module")
def server(seed_settings, tmp_path_factory):
    live = start_server(seed_settings.index_dir, tmp_path_factory.mktemp("load"))
    yield live
    live.stop()


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
