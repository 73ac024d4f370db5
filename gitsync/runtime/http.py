"""The agent's HTTP endpoints: webhooks, probes and metrics, on the stdlib ``ThreadingHTTPServer``.

- ``POST /webhooks/{github,gitlab,gitea,generic}``: verified by ``gitsync.runtime.webhooks``; 401 and nothing
  else on a bad signature, 413 before reading a body over the cap (Content-Length is required, 411 without),
  202 for an accepted or ignored delivery (the JSON body says which), 404 for a provider with no secret; a
  pull-request event goes to ``Endpoints.on_pull_request`` (the plan comment), ignored when there is none;
- ``GET /healthz``: the process serves requests (liveness);
- ``GET /readyz``: 200 once every app-env had its first reconcile attempted (on the leader) or the replica
  follows a leader; 503 with the reason otherwise;
- ``GET /metrics``: prometheus-client's text format from the default registry.

The server is meant to sit behind a Service in the cluster; still, no client can take it over
(``gitsync.runtime.admission``): a request's line, headers and body must all arrive within ``REQUEST_SECONDS``
however slowly they trickle, at most ``MAX_CONNECTIONS`` connections are served at once (one thread each) and
``CONNECTIONS_PER_CLIENT`` from one address (more are closed at once, so others are still served), webhook
requests are rate-limited per sender address (429), and a delivery id seen before is ignored, so a replayed
signed webhook is handled once. (A replay cannot take the cluster back anyway: the source stage deploys the
branch head, never an older revision a webhook names.) Secrets are read from their files on each delivery, so
a rotated Secret takes effect without a restart.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gitsync import log as logging
from gitsync.metrics import WEBHOOKS
from gitsync.runtime.admission import ConnectionSlots, RateLimiter, SeenDeliveries
from gitsync.runtime.config import Provider
from gitsync.runtime.pull_requests import PullRequestEvent
from gitsync.runtime.webhooks import MAX_BODY, Delivery, Verdict, delivery_id, handle

__all__ = ["Endpoints", "HttpServer"]

log = logging.get("gitsync.http")

REQUEST_SECONDS = 10.0
"""Time for a request's line, headers and body to arrive, in all (an idle keep-alive connection too)."""
MAX_CONNECTIONS = 128
CONNECTIONS_PER_CLIENT = 32
"""Twice what a busy sender keeps open: a connection's slot is given back only once its thread sees the client's
close, so a sender (a forge, or every sender behind one ingress address) that opens its next connection as soon as
it has read a reply briefly holds more slots than it has connections (at 16, a sender keeping 16 open had
one refused in CI)."""
WEBHOOKS_PER_SECOND = 20.0
"""Per sender address, after a burst of ``WEBHOOK_BURST``; a Git server sends one delivery per push, and a bot
pushing a hundred commits in a row (or a redelivery of them) stays inside the burst."""
WEBHOOK_BURST = 150

_STATUS = {
    Verdict.ACCEPTED: 202,
    Verdict.IGNORED: 202,
    Verdict.UNAUTHORIZED: 401,
    Verdict.TOO_LARGE: 413,
    Verdict.BAD_REQUEST: 400,
}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What the server calls into; the agent provides these."""

    branch: str
    secrets: Mapping[Provider, Path]
    on_push: Callable[[Provider, str], None]
    """Called with the provider and the pushed revision ("" if unknown) for every accepted push."""
    ready: Callable[[], tuple[bool, str]]
    on_pull_request: Callable[[Provider, PullRequestEvent], None] | None = None
    """Called for every accepted pull-request event (a plan comment is due); None: such events are ignored."""


class _Deadline(io.RawIOBase):
    """The socket as a readable stream that fails with ``TimeoutError`` once ``deadline`` (monotonic) has passed:
    a per-receive timeout alone lets a client sending a byte every few seconds hold a thread for ever."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def restart(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not received within {self.seconds:g} s")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10
    protocol_version = "HTTP/1.1"
    server_version = "gitsync"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self._deadline = _Deadline(self.connection, self.server.request_seconds)
        self.rfile = io.BufferedReader(self._deadline)

    def handle_one_request(self) -> None:
        self._deadline.restart()
        super().handle_one_request()

    def log_message(self, format: str, *args: object) -> None:
        """Silence the stdlib access log; deliveries are logged as structured events instead."""

    def _reply(self, status: int, payload: object, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        endpoints = self.server.endpoints
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif self.path == "/readyz":
            ready, reason = endpoints.ready()
            self._reply(200 if ready else 503, {"ready": ready, "reason": reason})
        elif self.path == "/metrics":
            self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        endpoints = self.server.endpoints
        prefix, _, name = self.path.partition("?")[0].rpartition("/")
        try:
            provider = Provider(name)
        except ValueError:
            provider = None
        if prefix != "/webhooks" or provider is None or provider not in endpoints.secrets:
            self.close_connection = True
            self._reply(404, {"error": "no such webhook"})
            return
        if not self.server.rate.allow(self.client_address[0], time.monotonic()):
            self.close_connection = True
            self._finish(provider, 429, Verdict.RATE_LIMITED, "too many requests from this sender")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not (length_header.isascii() and length_header.isdigit()):
            self.close_connection = True
            self._finish(provider, 411, Verdict.BAD_REQUEST, "Content-Length required")
            return
        length = int(length_header)
        if length > MAX_BODY:
            self.close_connection = True
            self._finish(provider, 413, Verdict.TOO_LARGE, f"body over {MAX_BODY} bytes")
            return
        body = self.rfile.read(length)
        try:
            secret = endpoints.secrets[provider].read_bytes().strip()
        except OSError as e:
            log.error("webhook.secret_unreadable", provider=str(provider), error=e.strerror)
            self._finish(provider, 503, Verdict.BAD_REQUEST, "webhook secret unavailable")
            return
        headers = {key: value for key, value in self.headers.items()}
        delivery = handle(provider, headers, body, secret, endpoints.branch)
        if delivery.verdict is Verdict.ACCEPTED and not self.server.seen.first_time(delivery_id(provider, headers)):
            delivery = Delivery(Verdict.IGNORED, delivery.revision, "delivery already received (a replay?)")
        if delivery.pull_request is not None and endpoints.on_pull_request is None:
            delivery = Delivery(Verdict.IGNORED, delivery.revision, "pull request: no forge configured to comment")
        if delivery.verdict is Verdict.ACCEPTED and delivery.pull_request is not None:
            assert endpoints.on_pull_request is not None
            endpoints.on_pull_request(provider, delivery.pull_request)
        elif delivery.verdict is Verdict.ACCEPTED:
            endpoints.on_push(provider, delivery.revision)
        self._finish(provider, _STATUS[delivery.verdict], delivery.verdict, delivery.detail, delivery.revision)

    def _finish(self, provider: Provider, status: int, verdict: Verdict, detail: str, revision: str = "") -> None:
        WEBHOOKS.labels(str(provider), str(verdict)).inc()
        emit = log.info if status < 400 else log.warning
        emit("webhook.received", provider=str(provider), result=str(verdict), detail=detail, revision=revision)
        self._reply(status, {"result": str(verdict), "detail": detail, "revision": revision})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    """Listen backlog: a burst of deliveries (a bulk push, a redelivery) must queue, not be reset."""

    def __init__(
        self, address: tuple[str, int], endpoints: Endpoints, request_seconds: float, rate: RateLimiter
    ) -> None:
        self.endpoints = endpoints
        self.request_seconds = request_seconds
        self.slots = ConnectionSlots(MAX_CONNECTIONS, CONNECTIONS_PER_CLIENT)
        self.rate = rate
        self.seen = SeenDeliveries()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, within the slots; a connection past them is closed at once."""
        if not self.slots.acquire(client_address[0]):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release(client_address[0])
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(client_address[0])


class HttpServer:
    """Serves ``endpoints`` on ``host:port`` from a background thread (port 0 picks a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        endpoints: Endpoints,
        *,
        request_seconds: float = REQUEST_SECONDS,
        webhook_burst: int = WEBHOOK_BURST,
        webhooks_per_second: float = WEBHOOKS_PER_SECOND,
    ) -> None:
        """``webhook_burst``: webhooks a sender may send at once before ``webhooks_per_second`` applies (a test
        sets it near zero, so that a burst is refused past ``webhook_burst`` however slowly the machine sends it)."""
        rate = RateLimiter(webhooks_per_second, webhook_burst)
        self._server = _Server((host, port), endpoints, request_seconds, rate)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
