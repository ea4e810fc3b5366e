"""Latency of the agent-facing endpoints of a running `qa serve`, against the REST API's in the
same run: POST /api/v1/ask (the baseline), POST /v1/chat/completions (whole and streamed: time to
the first piece of text and to [DONE]) and the MCP tool `ask` (a call in an open session).

One `qa serve` on a free loopback port, over an index folder (default: `index`, the demo
corpus's; build it with `qa index`). Every question is asked once first, so that all endpoints
then read its embedding from the cache and differ only by what they add. Rounds are
interleaved, in a rotating order, so that load from elsewhere on the machine falls on all alike.
One client, one question at a time.

    python benchmarks/bench_agents.py                  # 5 rounds of the seed questions (~1 min)
    python benchmarks/bench_agents.py --rounds 10 --index path/to/index
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS,
    ROOT,
    describe_machine,
    keep_scratch,
    machine,
    percentiles,
    scratch_dir,
    table,
    write_json,
)

SEED_QUESTIONS = ROOT / "tests" / "data" / "seed_questions.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(index: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "QA_INDEX_DIR": str(index), "QA_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "qa.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            health = httpx.get(url + "/healthz", timeout=5)
            if health.status_code == 200 and health.json().get("chat", "ready") == "ready":  # MCP is the chat's
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.terminate()
    keep_scratch(log.parent)  # named below: left to be read
    raise SystemExit(f"qa serve did not become ready; its log: {log}")


def rest(http: httpx.Client, question: str) -> float:
    started = time.perf_counter()
    r = http.post("/api/v1/ask", json={"question": question})
    r.raise_for_status()
    return time.perf_counter() - started


def chat(http: httpx.Client, question: str) -> float:
    started = time.perf_counter()
    r = http.post("/v1/chat/completions", json={"model": "qa", "messages": [{"role": "user", "content": question}]})
    r.raise_for_status()
    assert r.json()["citations"] is not None
    return time.perf_counter() - started


def chat_stream(http: httpx.Client, question: str) -> tuple[float, float]:
    """(seconds to the first piece of text, seconds to [DONE])."""
    body = {"model": "qa", "stream": True, "messages": [{"role": "user", "content": question}]}
    started = time.perf_counter()
    first = None
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter() - started
            if line == "data: [DONE]":
                break
    return first or 0.0, time.perf_counter() - started


async def mcp_calls(url: str, questions: list[str]) -> list[float]:
    """Seconds of each `ask` tool call, in one open session."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    times = []
    async with (
        httpx.AsyncClient(timeout=120) as client,
        streamable_http_client(url + "/gradio_api/mcp/", http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for question in questions:
            started = time.perf_counter()
            result = await session.call_tool("ask", {"question": question})
            times.append(time.perf_counter() - started)
            assert not result.isError, result.content
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, default=ROOT / "index")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_agents.json")
    args = parser.parse_args()
    questions = [q for item in json.loads(SEED_QUESTIONS.read_text(encoding="utf-8")) for q in item["questions"]]
    log = scratch_dir("qa-bench-agents-") / "server.log"
    process, url = start(args.index, log)
    samples: dict[str, list[float]] = {
        "POST /api/v1/ask (baseline)": [],
        "POST /v1/chat/completions": [],
        "  streamed: first text": [],
        "  streamed: [DONE]": [],
        "MCP tool ask": [],
    }
    names = list(samples)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            for question in questions:  # every embedding in the cache before anything is timed
                rest(http, question)
            for round_ in range(args.rounds):
                for turn in range(3):
                    which = (round_ + turn) % 3
                    if which == 0:
                        samples[names[0]] += [rest(http, q) for q in questions]
                    elif which == 1:
                        samples[names[1]] += [chat(http, q) for q in questions]
                        for q in questions:
                            first, done = chat_stream(http, q)
                            samples[names[2]].append(first)
                            samples[names[3]].append(done)
                    else:
                        samples[names[4]] += asyncio.run(mcp_calls(url, questions))
    finally:
        process.terminate()
        process.wait(15)
    info = machine()
    base = statistics.median(samples[names[0]])
    rows = []
    stats = {}
    for name, times in samples.items():
        p = percentiles(times)
        stats[name] = p
        rows.append([name, p["n"], p["p50_ms"], p["p95_ms"], p["p50_ms"] / (base * 1000)])
    print(describe_machine(info))
    print(
        table(
            ["endpoint", "calls", "p50 ms", "p95 ms", "x baseline p50"],
            rows,
            f"One client, {len(questions)} questions x {args.rounds} rounds, embeddings cached, index {args.index.name}",
        )
    )
    write_json(args.out, {"machine": info, "rounds": args.rounds, "questions": len(questions), "latency": stats})


if __name__ == "__main__":
    main()
