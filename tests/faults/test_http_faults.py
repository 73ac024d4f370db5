"""Hostile HTTP clients against the agent's server, with real sockets on 127.0.0.1 (clients bind 127.0.0.x to be
different senders): slow clients are cut off and never stop others being served; a replayed signed webhook is
handled once; webhooks are rate-limited per sender. Bounded: at most 40 sockets and a few seconds each."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.runtime.config import Provider
from gitsync.runtime.http import CONNECTIONS_PER_CLIENT, Endpoints, HttpServer
from gitsync.runtime.webhooks import sign

SECRET = b"replayed-secret"
PUSH = json.dumps({"ref": "refs/heads/main", "after": "d" * 40}).encode()
SLOW = "127.0.0.2"
OTHER = "127.0.0.3"


@contextlib.contextmanager
def serving(tmp_path: Path, request_seconds: float) -> Iterator[tuple[int, list[str]]]:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    pushes: list[str] = []
    endpoints = Endpoints("main", {Provider.GITHUB: secret}, lambda _p, rev: pushes.append(rev), lambda: (True, ""))
    # 30 webhooks at once, then one a minute: the burst is refused past 30 however long 40 requests take.
    served = HttpServer(
        "127.0.0.1", 0, endpoints, request_seconds=request_seconds, webhook_burst=30, webhooks_per_second=1 / 60
    )
    served.start()
    try:
        yield served.port, pushes
    finally:
        served.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    with serving(tmp_path, request_seconds=1.0) as served:
        yield served


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def get(port: int, path: str, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def post(port: int, body: bytes, headers: dict[str, str], source: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("POST", "/webhooks/github", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def trickle(socks: list[socket.socket], payload: bytes, seconds: float) -> list[socket.socket]:
    """Send ``payload`` a byte at a time to every socket (every 0.1 s) for up to ``seconds``; the sockets the
    server has not closed by then."""
    open_ = list(socks)
    deadline = time.monotonic() + seconds
    for index in range(len(payload)):
        open_ = [s for s in open_ if not closed_by_server(s)]
        if not open_ or time.monotonic() > deadline:
            break
        for sock in open_:
            with contextlib.suppress(OSError):  # closed meanwhile: seen at the next round
                sock.send(payload[index : index + 1])
        time.sleep(0.1)
    return [s for s in open_ if not closed_by_server(s)]


def test_slow_headers_are_cut_off_and_others_are_served(tmp_path: Path) -> None:
    # Accepted in the order they connect: the first CONNECTIONS_PER_CLIENT hold the client's slots, the others are
    # closed at once. 15 s to send a request (not 1 s): the held ones stay open while a loaded machine checks.
    with serving(tmp_path, request_seconds=15.0) as (port, _):
        threads = threading.active_count()
        slow = [connect(port, SLOW) for _ in range(40)]
        held, past = slow[:CONNECTIONS_PER_CLIENT], slow[CONNECTIONS_PER_CLIENT:]
        try:
            deadline = time.monotonic() + 60
            closed: set[socket.socket] = set()
            while len(closed) < len(past) and time.monotonic() < deadline:
                closed |= {s for s in past if s not in closed and closed_by_server(s)}
                time.sleep(0.05)
            assert len(closed) == len(past), "past its slots, a client's connections close at once"
            assert not [s for s in held if closed_by_server(s)], "the connections within its slots are served"
            assert threading.active_count() <= threads + CONNECTIONS_PER_CLIENT
            assert get(port, "/healthz", OTHER) == 200, "another client is served while the slow ones hang on"
            still_open = trickle(held, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200, seconds=30)
            assert still_open == [], "a request must arrive within request_seconds, however it trickles"
            assert get(port, "/healthz", SLOW) == 200, "the slow client's slots are free again"
        finally:
            for sock in slow:
                sock.close()


def test_a_slow_body_is_cut_off(server: tuple[int, list[str]]) -> None:
    port, pushes = server
    sock = connect(port, SLOW)
    try:
        head = f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: {len(PUSH)}\r\n\r\n".encode()
        sock.sendall(head)
        assert trickle([sock], PUSH, seconds=6) == []
    finally:
        sock.close()
    assert pushes == []


def test_a_replayed_delivery_is_handled_once(server: tuple[int, list[str]]) -> None:
    port, pushes = server
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sign(SECRET, PUSH)}"}
    first = post(port, PUSH, {**headers, "X-GitHub-Delivery": "1a2b"}, OTHER)
    replay = post(port, PUSH, {**headers, "X-GitHub-Delivery": "1a2b"}, OTHER)
    assert first == (202, {"result": "accepted", "detail": "", "revision": "d" * 40})
    assert replay == (
        202,
        {"result": "ignored", "detail": "delivery already received (a replay?)", "revision": "d" * 40},
    )
    assert pushes == ["d" * 40]


def test_webhooks_are_rate_limited_per_sender(server: tuple[int, list[str]]) -> None:
    port, _ = server
    statuses = [post(port, PUSH, {"X-GitHub-Event": "push"}, SLOW)[0] for _ in range(40)]
    assert statuses == [401] * 30 + [429] * 10, "a burst of 30, then 429 (unsigned requests count too)"
    assert post(port, PUSH, {"X-GitHub-Event": "push"}, OTHER)[0] == 401, "other senders are not limited"
