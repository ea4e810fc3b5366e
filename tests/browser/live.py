"""A real `qa serve` in a subprocess, on a free port, for the API and browser tests.

The servers use the index of the real corpus that tests/conftest.py builds once per session
(`seed_settings`); the converted model stays in the default cache (QA_CACHE_DIR), so that it is
converted once per machine, not per run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "corpus"
ARTIFACTS = ROOT / "artifacts"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def save_figures(name: str, figures: dict) -> None:
    """Write what a test module measured to `artifacts/<name>` (JSON), when it measured anything."""
    if figures:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / name).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Settings the tests decide for each server; the rest of the caller's QA_* environment (model,
# device, scoring...) is passed on, as the session's index was built with it.
_SERVER_SETTINGS = (
    "QA_INDEX_DIR",
    "QA_CORPUS_DIR",
    "QA_EMBED_ORIGINS",
    "QA_ROOT_PATH",
    "QA_AUTH_HEADER",
    "QA_USERS_FILE",
    "QA_RATE_LIMIT_PER_MINUTE",
    "QA_QUEUE_CONCURRENCY",
    "QA_QUEUE_MAX_SIZE",
    "QA_MAX_QUESTION_CHARS",
    "QA_QUEUE_WAIT_SECONDS",
    "QA_MAX_BODY_BYTES",
    "QA_PUBLIC_URL",
)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SERVER_SETTINGS}
    env.update(PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False", **extra)
    return env


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(
    index_dir: Path,
    workdir: Path,
    *,
    corpus: Path = CORPUS,
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 240,
    headers: dict[str, str] | None = None,
    chat: bool = True,
) -> LiveServer:
    """Start `qa serve` and wait until /healthz says the index is loaded (200) and, with `chat`,
    that the chat is mounted too (it comes a few seconds after the API: qa.serve.chat)."""
    port = port or free_port()
    log = workdir / f"server-{port}.log"
    extra = {"QA_INDEX_DIR": str(index_dir), "QA_CORPUS_DIR": str(corpus), **(env or {})}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "qa.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=_env(extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log, extra)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"qa serve exited with {process.returncode}:\n{server.log_tail()}")
        try:
            response = httpx.get(f"{server.url}/healthz", headers=headers, timeout=5)
            if response.status_code == 200 and (not chat or response.json().get("chat") == "ready"):
                return server
            if response.json().get("chat") == "error":
                server.stop()
                raise AssertionError(f"qa serve could not start its chat:\n{server.log_tail()}")
            if response.json().get("status") == "error":
                server.stop()
                raise AssertionError(
                    f"qa serve could not load its index: {response.text}\n{server.log_tail()}"
                )
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"qa serve not ready after {timeout} s:\n{server.log_tail()}")
        time.sleep(0.5)


def copy_corpus(files: list[str], target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(CORPUS / name, target / name)
    return target
