"""A small OpenAI-compatible chat-completions server, in-process, on 127.0.0.1: real HTTP, scripted
replies. Each test sets `server.reply` (text), `server.mode` and, for failures, `server.status`,
`server.raw` or `server.stream_raw` (bytes sent as they are) or `server.delay`; every request received is kept."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

__all__ = ["EMPLOYEES", "INVENTED", "SUPPORTED", "FakeLLM"]

# A question about the seed corpus and scripted sentences for its reply, `{n}` the number of the
# citation quoting "700 sur 770": one the evidence supports, one it does not.
EMPLOYEES = "¿Cuántos empleados de OpenAI amenazaron con renunciar?"
SUPPORTED = "700 de los 770 empleados de OpenAI amenazaron con renunciar [{n}]."
INVENTED = "La luna está hecha de queso [{n}]."


class FakeLLM:
    """`with FakeLLM() as server:` ... `server.url` is the base URL to configure."""

    def __init__(self) -> None:
        self.reply = "Nothing [1]."
        self.mode = "auto"  # "auto": SSE when asked to stream; "json": always one JSON document
        self.status = 200
        self.raw: bytes | None = None  # sent instead of a well-formed reply
        self.stream_raw: bytes | None = None  # sent instead of well-formed events, when streaming
        self.delay = 0.0  # seconds before answering
        self.piece_delay = 0.0  # seconds between streamed pieces
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (the timeout tests): nothing to report

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                time.sleep(fake.delay)
                if self.path != "/v1/chat/completions":
                    return self._send(404, "application/json", b'{"error": "not found"}')
                if fake.status != 200:
                    return self._send(fake.status, "application/json", b'{"error": "model overloaded"}')
                if fake.raw is not None:
                    return self._send(200, "application/json", fake.raw)
                if body.get("stream") and fake.mode == "auto":
                    return self._stream()
                message = {"role": "assistant", "content": fake.reply}
                document = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
                return self._send(200, "application/json", json.dumps(document).encode())

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}]
                words = fake.reply.split(" ")
                events += [
                    {"choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}}]}
                    for i, w in enumerate(words)
                ]
                events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                events.append({"choices": [], "usage": {"completion_tokens": len(words)}})
                if fake.stream_raw is not None:
                    self.wfile.write(fake.stream_raw)
                    return
                self.wfile.write(b": keep-alive\n\n")
                for event in events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(fake.piece_delay)
                self.wfile.write(b"data: [DONE]\n\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
