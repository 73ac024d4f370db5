"""A notification receiver for tests: a real HTTP server on 127.0.0.1 in a thread that records every delivery,
answers a script of statuses (then 200), or hangs until released. Used by tests/unit and tests/e2e."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiving:
    """An HTTP receiver on 127.0.0.1: answers ``script`` in order (then 200), or hangs while ``hang`` is clear."""

    port: int = 0
    got: list[Delivery] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hang: threading.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, count: int, timeout: float = 60.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.got) >= count, f"the receiver got {len(self.got)} deliveries, expected {count}"
        return self.got


@pytest.fixture
def receiving() -> Iterator[Callable[..., Receiving]]:
    servers: list[tuple[ThreadingHTTPServer, Receiving]] = []

    def start(script: list[tuple[int, dict[str, str]]] | None = None, hang: bool = False) -> Receiving:
        state = Receiving(script=list(script or []), hang=threading.Event() if hang else None)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                state.got.append(Delivery(dict(self.headers.items()), body))
                if state.hang is not None:
                    state.hang.wait(30)
                status, headers = state.script.pop(0) if state.script else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        state.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, state))
        return state

    yield start
    for server, state in servers:
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()


def signed(d: Delivery, secret: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret, d.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(d.headers["X-Gitsync-Signature"], expected)
