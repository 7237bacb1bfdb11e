"""A minimal OpenAI-compatible chat server on 127.0.0.1, for tests and the synthesis-throughput benchmark.

It speaks just enough of ``POST /v1/chat/completions`` for the ``openai`` client: a JSON body in, a
``chat.completion`` object out. What it answers is a function of the request (``handler``), so tests can
script real failure modes over real HTTP: a 500 and then success (retries), a body that is not JSON, a
reply slower than the client's timeout, a truncated completion (``finish_reason: length``).

Why not FastAPI/uvicorn: the stdlib server has no start-up cost, needs nothing installed, and is fast
enough that the benchmark measures the client, not the server. Nothing here is used by a real build.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server sends back for one request."""

    content: str | None = "ok"
    status: int = 200
    finish_reason: str = "stop"
    delay_s: float = 0.0
    raw_body: bytes | None = None  # sent verbatim instead of a chat.completion object
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[dict[str, Any], int], Reply]


def echo_handler(body: dict[str, Any], n: int) -> Reply:
    """A deterministic answer: a digest of (messages, seed, temperature), or the first allowed choice."""
    choices = _allowed_choices(body)
    digest = hashlib.sha256(
        json.dumps([body.get("messages"), body.get("seed"), body.get("temperature")], sort_keys=True).encode()
    ).hexdigest()
    if choices:
        pick = choices[int(digest[:8], 16) % len(choices)]
        rf = body.get("response_format") or {}
        return Reply(json.dumps({"choice": pick}) if rf.get("type") == "json_schema" else pick)
    return Reply(f"echo {digest[:16]}")


def instant_handler(body: dict[str, Any], n: int) -> Reply:
    """The cheapest valid answer (the benchmark's server: isolates client overhead)."""
    return Reply("ok")


def _allowed_choices(body: dict[str, Any]) -> list[str] | None:
    so = body.get("structured_outputs") or {}
    if so.get("choice"):
        return list(so["choice"])
    if body.get("guided_choice"):
        return list(body["guided_choice"])
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    enum = ((schema.get("properties") or {}).get("choice") or {}).get("enum")
    return list(enum) if enum else None


def completion_body(content: str | None, model: str, finish_reason: str = "stop", n: int = 0) -> bytes:
    return json.dumps(
        {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


class LoopbackServer:
    """``with LoopbackServer(handler) as srv: ... srv.url ...``; ``srv.requests`` holds every request body.

    The handler runs in the server's request thread; it gets the parsed body and the request's ordinal.
    """

    def __init__(self, handler: Handler = echo_handler, record: bool = True):
        self.handler = handler
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self._count = 0
        self._lock = threading.Lock()
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real inference servers
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                with server._lock:
                    n = server._count
                    server._count += 1
                    if server.record:
                        server.requests.append(body)
                        server.authorizations.append(self.headers.get("Authorization"))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}', {})
                    return
                reply = server.handler(body, n)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.raw_body is not None:
                    payload = reply.raw_body
                elif reply.status >= 400:
                    payload = json.dumps({"error": {"message": f"scripted error {reply.status}"}}).encode()
                else:
                    payload = completion_body(reply.content, str(body.get("model", "")), reply.finish_reason, n)
                try:
                    self._send(reply.status, payload, reply.headers)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                headers = dict(headers)
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._httpd = _Server(("127.0.0.1", 0), _H)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    @property
    def hits(self) -> int:
        with self._lock:
            return self._count

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(port_file: str, handler: str = "instant") -> None:
    """Run a server in this process until killed, writing its port to ``port_file`` (for benchmarks)."""
    h = {"instant": instant_handler, "echo": echo_handler}[handler]
    srv = LoopbackServer(h, record=False)
    with open(port_file, "w") as fh:
        fh.write(str(srv.port))
    srv._httpd.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    import sys

    serve_forever(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "instant")
