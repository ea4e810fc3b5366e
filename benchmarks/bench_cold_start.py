"""Cold start: process start to the first answer, the quick question path against the full model.

Each command runs in fresh processes, alternating between the default (questions embedded by
the quick path, `qa.embed.quick`: no torch, no sentence-transformers) and the baseline, the
full sentence-transformers path every process took before (`QA_FAST_QUERIES=0`), in the same
run, so that both see the same machine:

1. `qa search QUESTION -k 3` and `qa ask QUESTION`: wall time from spawn to exit (the answer
   printed), and the CPU time the process used (user + system: on a busy machine the wall time
   stretches with the other processes' load, the CPU time much less);
2. `qa serve` on a free loopback port: wall time until the REST API is ready (/healthz answers
   200), the CPU time and resident memory at that moment, then one real question through POST
   /api/v1/ask (its answer must cite a passage), then the wall time until the chat is mounted
   (/healthz says `"chat": "ready"` and / is the chat page), then `--questions` more questions.
   Three servers, alternating: today's `qa serve` (the chat made on a thread once the index has
   loaded, `qa.serve.chat`); the previous start-up, "chat first" (the chat made before the port
   opens: `create_app(defer_chat=False)` after the same early loading `qa serve` does, run by
   uvicorn as `qa serve` runs it); and `qa serve` on the full model (`QA_FAST_QUERIES=0`);
3. what importing the heavy libraries alone costs (torch, sentence-transformers, OpenVINO with
   `tokenizers`, Gradio).

`--against DIR` adds a third path to the CLI commands: the quick path of another checkout of qa
(DIR: the folder holding its `qa/`, e.g. `mkdir before && git archive HEAD~2 qa | tar -x -C before`),
run from that folder, alternating with the others: a same-run "before" for a change to the question path.

`--priority N` runs the measured processes at nice level -N (root only): on a shared machine
they then get a core whenever they want one, which approximates a quiet machine (the other
processes still share the caches and the memory bandwidth).

Before measuring, one full-path and one quick-path process run unmeasured: they leave the query
bundle, OpenVINO's compiled model and the language identifier's copy in the cache, as any first
`qa index`, `qa ask` or `qa serve` does. The machine's load average is printed before and after.

    python benchmarks/bench_cold_start.py              # ~3-5 minutes on 2 cores
    python benchmarks/bench_cold_start.py --repeat 5 --questions 20 --index index
    sudo python benchmarks/bench_cold_start.py --priority 20    # a busy machine made quiet-like
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, describe_machine, ensure_index, machine, shown, table, write_json

QUESTIONS = [
    "¿Qué porcentaje de OpenAI posee Microsoft?",
    "Who did the board name as CEO?",
    "OpenAIの従業員のうち何人が辞めると脅しましたか？",
    "Wie viel hat Microsoft in OpenAI investiert?",
    "Pourquoi Microsoft a-t-il besoin de Sam Altman ?",
]
PATHS = {"quick": {}, "full": {"QA_FAST_QUERIES": "0"}}  # the environment of each path
IMPORTS = {
    "import torch": "import torch",
    "import sentence_transformers": "import sentence_transformers",
    "import openvino, tokenizers": "import sys; sys.modules['openvino_telemetry'] = None; import openvino, tokenizers",
    "import gradio": "import gradio",
}


_prefix: list[str] = []  # set by --priority: `nice -n -N`, which runs the command at that priority


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process(command: list[str], env: dict, cwd: Path = ROOT) -> dict:
    """Run `command` from scratch (in `cwd`): wall seconds from spawn to exit, and its CPU seconds."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(_prefix + command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"seconds": round(seconds, 2), "cpu_s": round(_children_cpu() - cpu, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> dict:
    """Resident memory (MB) and CPU seconds so far of a running process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_mb": out.get("VmRSS", 0), "peak_rss_mb": out.get("VmHWM", 0),
            "cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 2)}


# The start-up before the chat was made on a thread: what `qa serve` ran then (the index and the
# model loading early on a thread, the chat made, then uvicorn), with today's code otherwise.
CHAT_FIRST = """
import sys
import uvicorn
from qa.cli import _load_engine_early
from qa.config import Settings
from qa.runtime import configure_logging
from qa.serve.app import create_app
settings = Settings()
configure_logging(settings)
_load_engine_early(settings)
app = create_app(settings, defer_chat=False)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=5)
"""
SERVERS = {  # name: (how it starts, its environment beside the base one)
    "qa serve (chat on a thread)": ("serve", {}),
    "chat first (previous start-up)": ("chat-first", {}),
    "qa serve, full model": ("serve", PATHS["full"]),
}


def _health(base: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as reply:
            return json.load(reply) if reply.status == 200 else None
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return None


def _ask(base: str, question: str) -> dict:
    body = json.dumps({"question": question}).encode()
    request = urllib.request.Request(f"{base}/api/v1/ask", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.load(reply)


def serve_run(env: dict, n_questions: int, how: str = "serve", timeout: float = 300) -> dict:
    """A server from scratch: seconds until the API is ready (/healthz 200), CPU and memory then,
    a first question, seconds until the chat is mounted, then questions."""
    port = free_port()
    if how == "serve":
        command = [sys.executable, "-m", "qa.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, "-c", CHAT_FIRST, str(port)]
    start = time.perf_counter()
    # (`nice` replaces itself with the command: the pid is the server's.)
    proc = subprocess.Popen(_prefix + command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    base = f"http://127.0.0.1:{port}"

    def wait_for(ready) -> float:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            health = _health(base)
            if health is not None and ready(health):
                return round(time.perf_counter() - start, 2)
            time.sleep(0.02)
        raise RuntimeError(f"the server was not ready after {timeout} s")

    try:
        api_ready = wait_for(lambda health: True)
        at_ready = proc_stats(proc.pid)
        t = time.perf_counter()
        first = _ask(base, QUESTIONS[0])
        first_s = round(time.perf_counter() - t, 3)
        if not first.get("citations"):  # an answer, not just a 200
            raise RuntimeError(f"the first question was not answered: {first.get('reply')!r}")
        chat_ready = wait_for(lambda health: health.get("chat", "ready") == "ready")
        with urllib.request.urlopen(f"{base}/", timeout=30) as reply:
            if reply.status != 200 or b"gradio" not in reply.read().lower():
                raise RuntimeError("/ is not the chat page once the chat is ready")
        latencies = []
        for i in range(n_questions):
            t = time.perf_counter()
            _ask(base, QUESTIONS[i % len(QUESTIONS)])
            latencies.append(round(time.perf_counter() - t, 3))
        after = proc_stats(proc.pid)
        return {"seconds": api_ready, "chat_s": chat_ready, "first_ask_s": first_s, "cpu_s": at_ready["cpu_s"],
                "ready_rss_mb": at_ready["rss_mb"], "rss_after_questions_mb": after["rss_mb"],
                "peak_rss_mb": after["peak_rss_mb"], "ask_latencies_s": latencies}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _where(path: Path) -> str:
    """A path as recorded: relative to the repository when inside it, else with ~ for home."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return shown(path)


def median_of(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per path and command; medians are kept")
    parser.add_argument("--questions", type=int, default=5, help="questions asked to each server once ready")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default: the benchmark index of corpus/)")
    parser.add_argument("--priority", type=int, default=0, metavar="N",
                        help="run the measured processes at nice -N (root only; approximates a quiet machine)")
    parser.add_argument("--only", choices=["all", "cli", "serve"], default="all",
                        help="measure only the CLI commands (and imports), or only the servers")
    parser.add_argument("--no-full-server", action="store_true",
                        help="leave out the server on the full model (its 1.6 GB evict the others' files from the page cache)")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="also run the CLI commands' quick path from this other checkout of qa (a same-run before)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_cold_start.json")
    args = parser.parse_args(argv)
    if args.priority:
        if os.geteuid() != 0:
            raise SystemExit("--priority needs root (a negative nice level); run without it, or as root.")
        _prefix[:] = ["nice", "-n", str(-args.priority)]

    index_dir = (args.index or ensure_index()).resolve()
    base_env = {**os.environ, "QA_INDEX_DIR": str(index_dir), "PYTHONUNBUFFERED": "1"}
    base_env.pop("QA_FAST_QUERIES", None)
    info = machine()
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"Machine: {describe_machine(info)}")
    print(f"Index: {_where(index_dir)}; load average (1, 5, 15 min) before: {load_before}\n", flush=True)

    cli = [sys.executable, "-m", "qa.cli"]
    commands = {
        "qa search QUESTION -k 3": cli + ["search", QUESTIONS[1], "-k", "3"],
        "qa ask QUESTION": cli + ["ask", QUESTIONS[0]],
    }
    # Each path: its environment and folder (`python -m` puts the folder first on the path).
    paths = {path: ({**base_env, **extra}, ROOT) for path, extra in PATHS.items()}
    if args.against:
        before = args.against.resolve()
        paths["before"] = ({**base_env, "PYTHONPATH": str(before)}, before)
    # Unmeasured: the full path leaves the query bundle, the quick path OpenVINO's compiled model
    # (and a checkout's first run compiles its loops, `qa.kernels`).
    for path in ("full", "quick", "before"):
        if path in paths:
            run_process(commands["qa search QUESTION -k 3"], *paths[path])

    measured: dict[str, dict[str, list[dict]]] = {}
    for name, command in commands.items() if args.only != "serve" else []:
        runs: dict[str, list[dict]] = {path: [] for path in paths}
        for _ in range(args.repeat):
            for path, (env, cwd) in paths.items():  # alternating, so that all see the same load
                runs[path].append(run_process(command, env, cwd))
        measured[name] = runs
        print(f"  {name}: quick {median_of(runs['quick'], 'seconds')} s, full {median_of(runs['full'], 'seconds')} s",
              flush=True)
    servers = {name: spec for name, spec in SERVERS.items() if not (args.no_full_server and spec[1])}
    serve: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(args.repeat if args.only != "cli" else 0):
        for name, (how, extra) in servers.items():  # alternating, as above
            serve[name].append(serve_run({**base_env, **extra}, args.questions, how))
    for name, runs in serve.items() if args.only != "cli" else []:
        print(f"  {name}: API ready {median_of(runs, 'seconds')} s, chat ready {median_of(runs, 'chat_s')} s",
              flush=True)

    rows = []
    for name, runs in measured.items():
        quick_s, full_s = median_of(runs["quick"], "seconds"), median_of(runs["full"], "seconds")
        rows.append([name, quick_s, full_s, round(full_s / quick_s, 2), median_of(runs["quick"], "cpu_s"),
                     median_of(runs["full"], "cpu_s")])
        if "before" in runs:
            rows[-1] += [median_of(runs["before"], "seconds"), median_of(runs["before"], "cpu_s")]
    serve_rows = []
    for name, runs in serve.items() if args.only != "cli" else []:
        now = median_of(serve[next(iter(SERVERS))], "seconds")
        serve_rows.append([name, median_of(runs, "seconds"), round(median_of(runs, "seconds") / now, 2),
                           median_of(runs, "first_ask_s"), median_of(runs, "chat_s"), median_of(runs, "cpu_s"),
                           median_of(runs, "ready_rss_mb"), median_of(runs, "rss_after_questions_mb")])

    imports = {}
    for name, code in IMPORTS.items() if args.only != "serve" else []:
        runs = [run_process([sys.executable, "-c", code], base_env) for _ in range(args.repeat)]
        imports[name] = runs
    load_after = [round(x, 2) for x in os.getloadavg()]

    text = "\n\n".join([
        table(["process start to answer", "quick s", "full s", "full / quick", "quick CPU s", "full CPU s"]
              + (["before: quick s", "before: quick CPU s"] if args.against else []), rows,
              title=f"Cold start, median of {args.repeat} fresh processes per path (alternating"
                    f"{f', at nice -{args.priority}' if args.priority else ''}); "
                    f"load average before {load_before}, after {load_after}"),
        table(["qa serve, start to", "API ready s", "/ today", "1st ask s", "chat ready s", "CPU s at API ready",
               "RSS MB at API ready", f"RSS MB after {args.questions + 1} questions"], serve_rows,
              title=f"Server start-up, median of {args.repeat} fresh servers each (alternating): API ready = "
                    "/healthz 200; 1st ask = a question then; chat ready = /healthz chat ready"),
        table(["import alone", "s", "CPU s"],
              [[name, median_of(runs, "seconds"), median_of(runs, "cpu_s")] for name, runs in imports.items()]),
        "server /api/v1/ask latencies (s), qa serve: "
        + str([r["ask_latencies_s"] for r in serve[next(iter(SERVERS))]]),
    ])
    print("\n" + text)
    payload = {"benchmark": "bench_cold_start", "machine": info, "index_dir": _where(index_dir), "repeat": args.repeat,
               "against": bool(args.against),
               "priority": args.priority, "load_average_before": load_before, "load_average_after": load_after, "processes": measured,
               "servers": serve,
               "imports": imports, "table": text}
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
