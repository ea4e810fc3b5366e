"""Serving throughput: questions/second and latency of a running `qa serve` under concurrent clients.

One `qa serve` process per configuration, all started on free loopback ports with the benchmark
index: the baseline (the settings before batching: QA_QUERY_BATCH_SIZE=1, QA_QUEUE_CONCURRENCY=2),
batching alone, more questions let in at once alone, and both (the defaults now). Every measurement point (mode x clients) runs against
each server in turn, in a rotating order, so that load from elsewhere on the machine hits every
configuration alike; each configuration is reported as a ratio of the baseline at the same point.

Clients are threads, each with its own HTTP connection, asking one question after another
(POST /api/v1/ask by default) for `--seconds`. Two modes:
- distinct: every question is new to that server (XQuAD questions, 12 languages interleaved),
  so each one is embedded;
- repeated: the same few questions over and over, asked once before, so their embeddings come
  from the cache and only the search and the answer are computed.

    python benchmarks/bench_serve.py                    # ~10 minutes (20 s per point)
    python benchmarks/bench_serve.py --seconds 10       # ~6 minutes
    python benchmarks/bench_serve.py --clients 1 4 16 32 --endpoint search
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS,
    ROOT,
    describe_machine,
    ensure_index,
    machine,
    percentiles,
    shown,
    table,
    write_json,
)


def configs(concurrency: int) -> dict[str, dict[str, str]]:
    """name -> environment of its server. The first is the baseline: the settings before batching."""
    return {
        "baseline: batch 1 (off), concurrency 2": {"QA_QUERY_BATCH_SIZE": "1", "QA_QUEUE_CONCURRENCY": "2"},
        "batch 32, concurrency 2": {"QA_QUERY_BATCH_SIZE": "32", "QA_QUEUE_CONCURRENCY": "2"},
        f"batch 1 (off), concurrency {concurrency}": {"QA_QUERY_BATCH_SIZE": "1", "QA_QUEUE_CONCURRENCY": str(concurrency)},
        f"batch 32, concurrency {concurrency}": {"QA_QUERY_BATCH_SIZE": "32", "QA_QUEUE_CONCURRENCY": str(concurrency)},
    }


REPEATED = 24  # questions of the repeated mode (2 per XQuAD language)


def embedding_backend() -> str:
    """How the servers run the model (qa.embed.backend's choice for these settings), for the record."""
    from qa.config import Settings
    from qa.embed.local import _pick_device

    settings = Settings()
    try:
        from qa.embed import backend as embed_backend
    except ImportError:  # a qa from before the backends: plain torch
        return "torch"
    return embed_backend.choose_backend(settings.embed_backend, _pick_device(settings.device),
                                        openvino=embed_backend.openvino_installed(), bf16=embed_backend.cpu_has_bf16())


def load_questions() -> tuple[list[str], str]:
    """Distinct questions, languages interleaved: XQuAD when found, else the seed questions."""
    from qa.xquad import find_xquad, load_xquad

    folder = find_xquad(ROOT)
    if folder is not None:
        data = load_xquad(folder)
        columns = [data.questions[lang] for lang in data.langs]
        return [q for row in zip(*columns) for q in row], f"XQuAD ({len(data.langs)} languages)"
    seed = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8"))
    return [q for fact in seed for q in fact["questions"].values()], "tests/data/seed_questions.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `qa serve` child process on a free loopback port."""

    def __init__(self, env: dict, log_dir: Path, name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        qa_cli = Path(sys.executable).parent / "qa"
        command = [str(qa_cli)] if qa_cli.exists() else [sys.executable, "-c", "from qa.cli import main; main()"]
        # The log goes to a file: a pipe nobody reads would block the server once full.
        self.log = open(log_dir / f"{name}.log", "w+", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen(command + ["serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                        env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds from spawn to /healthz 200 with the chat mounted (its making would take CPU from
        the measured questions; the servers start together, so they share the cores)."""
        start = self.spawned
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"qa serve exited with {self.process.returncode}: {self.log.read()[-2000:]}")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=2)
            except httpx.HTTPError:
                health = None
            if health is not None and health.status_code == 200 and health.json().get("chat", "ready") == "ready":
                return time.perf_counter() - start
            if health is not None and health.json().get("status") == "error":  # it will not get better
                raise RuntimeError(f"qa serve cannot load the index: {health.json().get('message')}")
            time.sleep(0.2)
        raise RuntimeError(f"qa serve not ready after {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def request(client: httpx.Client, endpoint: str, question: str) -> httpx.Response:
    if endpoint == "ask":
        return client.post("/api/v1/ask", json={"question": question})
    return client.get("/api/v1/search", params={"q": question, "k": 5})


def load_point(url: str, endpoint: str, next_question, clients: int, seconds: float) -> dict:
    """`clients` threads asking `next_question()` one after another for `seconds`."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                question = next_question()
                started = time.perf_counter()
                try:
                    status = request(client, endpoint, question).status_code
                except httpx.HTTPError:
                    status = -1
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stats = percentiles(latencies) if latencies else {"n": 0, "p50_ms": None, "p95_ms": None}
    return {"clients": clients, "seconds": round(elapsed, 2), "answered": len(latencies),
            "qps": round(len(latencies) / elapsed, 2), "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"],
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def distinct_questions(pool: list[str]):
    """A thread-safe source that never repeats a question (wraps around, and says so, if the pool runs out)."""
    numbers = itertools.count()
    state = {"wrapped": False}

    def next_question() -> str:
        n = next(numbers)  # atomic under the GIL
        if n >= len(pool):
            state["wrapped"] = True
        return pool[n % len(pool)]

    return next_question, state


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="duration of each measurement point")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients")
    parser.add_argument("--modes", nargs="+", choices=["distinct", "repeated"], default=["distinct", "repeated"])
    parser.add_argument("--endpoint", choices=["ask", "search"], default="ask",
                        help="POST /api/v1/ask (the cited answer) or GET /api/v1/search (passages only)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="QA_QUEUE_CONCURRENCY of configurations 2 and 3 (questions answered at once)")
    parser.add_argument("--configs", type=int, nargs="+", default=[1, 2, 3],
                        help=f"which configurations besides the baseline (0, always run): {list(configs(8))}")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_serve.json")
    args = parser.parse_args(argv)

    index_dir = ensure_index()
    questions, source = load_questions()
    repeated = questions[:REPEATED]
    pool = questions[REPEATED:]
    every = configs(args.concurrency)
    names = [name for n, name in enumerate(every) if n == 0 or n in args.configs]
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    backend = embedding_backend()
    print(f"Index: {shown(index_dir)}; questions: {len(questions)} from {source}; endpoint /api/v1/{args.endpoint}; "
          f"embedding backend {backend}\n")

    # The caller's QA_* settings (model, cache) pass on, as ensure_index() built the index with them.
    base_env = {**os.environ, "QA_INDEX_DIR": str(index_dir), "QA_LOG_LEVEL": "warning", "TQDM_DISABLE": "1",
                "PYTHONUNBUFFERED": "1"}
    results: dict[str, dict] = {name: {"env": every[name], "points": []} for name in names}
    with tempfile.TemporaryDirectory() as logs:
        servers = {}
        try:
            for n, name in enumerate(names):
                servers[name] = Server({**base_env, **every[name]}, Path(logs), f"server{n}")
            for name, server in servers.items():
                results[name]["ready_s"] = round(server.wait_ready(), 1)
                with httpx.Client(base_url=server.url, timeout=120) as client:
                    for question in repeated:  # warm: caches these, loads lazy structures
                        request(client, args.endpoint, question).raise_for_status()
            print(f"{len(servers)} servers ready; {len(args.modes) * len(args.clients)} points x "
                  f"{len(servers)} configurations x {args.seconds:g} s\n", flush=True)
            sources = {name: distinct_questions(pool) for name in names}
            turn = 0
            for mode in args.modes:
                for clients in args.clients:
                    order = names[turn % len(names):] + names[: turn % len(names)]
                    turn += 1
                    for name in order:
                        if mode == "distinct":
                            next_question = sources[name][0]
                        else:
                            cycle = itertools.cycle(repeated)
                            next_question = lambda cycle=cycle: next(cycle)
                        point = load_point(servers[name].url, args.endpoint, next_question, clients, args.seconds)
                        point["mode"] = mode
                        results[name]["points"].append(point)
                        print(f"  {mode:8} {clients:3} clients  {point['qps']:7.2f} q/s  p50 {point['p50_ms']} ms  "
                              f"{point['statuses']}  {name}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    for name in names:
        results[name]["distinct_pool_wrapped"] = sources[name][1]["wrapped"]

    baseline = {(p["mode"], p["clients"]): p for p in results[names[0]]["points"]}
    rows = []
    for mode in args.modes:
        for clients in args.clients:
            base = baseline[(mode, clients)]
            for name in names:
                p = next(p for p in results[name]["points"] if (p["mode"], p["clients"]) == (mode, clients))
                failed = sum(v for k, v in p["statuses"].items() if k != "200")
                ratio = round(p["qps"] / base["qps"], 2) if base["qps"] else "-"
                rows.append([mode, clients, name, p["qps"], ratio, p["p50_ms"] or "-", p["p95_ms"] or "-", failed])
    text = table(["mode", "clients", "configuration", "q/s", "x baseline", "p50 ms", "p95 ms", "not 200"], rows,
                 title=f"/api/v1/{args.endpoint} throughput ({backend}), {args.seconds:g} s per point, one fresh server per "
                       f"configuration, points interleaved (ratio: q/s vs the baseline at the same point)")
    print("\n" + text)
    payload = {"benchmark": "bench_serve", "machine": info, "index_dir": shown(index_dir), "endpoint": args.endpoint, "embedding_backend": backend,
               "seconds": args.seconds, "questions": source, "repeated_questions": REPEATED,
               "configs": results, "table": text}
    print(f"\nWrote {shown(write_json(args.out, payload))}")
    return payload


if __name__ == "__main__":
    main()
