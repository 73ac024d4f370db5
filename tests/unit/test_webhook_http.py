"""The HTTP server on 127.0.0.1: status codes a sender sees, and that only verified pushes reach the agent."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.runtime.config import Provider
from gitsync.runtime.http import Endpoints, HttpServer
from gitsync.runtime.webhooks import MAX_BODY, sign

SECRET = b"topsecret"


class Recorder:
    def __init__(self) -> None:
        self.pushes: list[tuple[Provider, str]] = []
        self.is_ready = (False, "first reconcile pending")

    def on_push(self, provider: Provider, revision: str) -> None:
        self.pushes.append((provider, revision))

    def ready(self) -> tuple[bool, str]:
        return self.is_ready


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Recorder]]:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    recorder = Recorder()
    endpoints = Endpoints("main", {Provider.GITHUB: secret, Provider.GITEA: secret}, recorder.on_push, recorder.ready)
    server = HttpServer("127.0.0.1", 0, endpoints)
    server.start()
    yield server.port, recorder
    server.stop()


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def github(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sign(secret, body)}"}


PUSH = json.dumps({"ref": "refs/heads/main", "after": "c" * 40}).encode()


def test_valid_push_is_accepted_and_handed_over(served: tuple[int, Recorder]) -> None:
    port, recorder = served
    assert request(port, "POST", "/webhooks/github", PUSH, github(PUSH)) == 202
    assert recorder.pushes == [(Provider.GITHUB, "c" * 40)]


def test_bad_signature_is_401_and_nothing_happens(served: tuple[int, Recorder]) -> None:
    port, recorder = served
    assert request(port, "POST", "/webhooks/github", PUSH, github(PUSH, b"nope")) == 401
    assert request(port, "POST", "/webhooks/gitea", PUSH, {"X-Gitea-Event": "push"}) == 401
    assert recorder.pushes == []


def test_oversized_body_is_413_without_reading_it(served: tuple[int, Recorder]) -> None:
    port, recorder = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/webhooks/github")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()  # no body sent: the answer must come from the header alone
    assert conn.getresponse().status == 413
    conn.close()
    assert recorder.pushes == []


@pytest.mark.parametrize("length", ["\u00b2", "-1", "1e3", ""])
def test_a_content_length_that_is_not_a_number_is_411(served: tuple[int, Recorder], length: str) -> None:
    """Superscript two is a digit to str.isdigit but not to int(): it must not crash the handler."""
    port, recorder = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/webhooks/github")
    conn.putheader("Content-Length", length)
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert recorder.pushes == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/webhooks/gitlab", 404),  # no secret configured for it
        ("POST", "/webhooks/bitbucket", 404),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 503),
        ("GET", "/metrics", 200),
        ("GET", "/nope", 404),
    ],
)
def test_routes(served: tuple[int, Recorder], method: str, path: str, status: int) -> None:
    port, _ = served
    assert request(port, method, path, b"{}" if method == "POST" else b"") == status


def test_push_to_another_branch_is_ignored(served: tuple[int, Recorder]) -> None:
    port, recorder = served
    body = json.dumps({"ref": "refs/heads/feature", "after": "d" * 40}).encode()
    assert request(port, "POST", "/webhooks/github", body, github(body)) == 202
    assert recorder.pushes == []
