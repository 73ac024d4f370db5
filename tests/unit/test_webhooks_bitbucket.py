"""Bitbucket Cloud and Bitbucket Data Center push webhooks: signed deliveries accepted with the pushed commit.

The payloads and headers follow Atlassian's documentation ("Event payloads" for Bitbucket Cloud,
https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/, and "Event payload" for Bitbucket Data
Center, https://confluence.atlassian.com/bitbucketserver/event-payload-938025882.html, with "Manage webhooks" for
the ``X-Hub-Signature: sha256=<hmac>`` secret): the documented push examples, with the common entities that
gitsync does not read (``actor``, ``repository``, links) trimmed.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from gitsync.runtime.config import Provider
from gitsync.runtime.http import Endpoints, HttpServer
from gitsync.runtime.webhooks import Verdict, delivery_id, handle, sign

SECRET = b"bitbucket-webhook-secret"
NEW = "709d658dc5b6d6afcd46049c2f332ee3f515a67d"
OLD = "1e65c05c1d5171631d92438a13901ca7dae9618c"


def cloud_change(branch: str, new: str | None = NEW) -> dict[str, Any]:
    """One entry of Cloud's ``push.changes`` (``new`` is null when the push deleted the branch)."""

    def ref(sha: str) -> dict[str, Any]:
        return {
            "type": "branch",
            "name": branch,
            "target": {
                "type": "commit",
                "hash": sha,
                "message": "new commit message\n",
                "date": "2015-06-09T03:34:49+00:00",
            },
        }

    return {
        "new": ref(new) if new else None,
        "old": ref(OLD),
        "created": False,
        "forced": False,
        "closed": new is None,
        "truncated": False,
    }


def cloud_push(*changes: dict[str, Any]) -> bytes:
    return json.dumps({"push": {"changes": list(changes)}}).encode()


def data_center_push(ref: str = "refs/heads/main", change: str = "UPDATE", to_hash: str = NEW) -> bytes:
    return json.dumps(
        {
            "eventKey": "repo:refs_changed",
            "date": "2017-09-19T09:45:32+1000",
            "changes": [
                {
                    "ref": {"id": ref, "displayId": ref.removeprefix("refs/heads/"), "type": "BRANCH"},
                    "refId": ref,
                    "fromHash": OLD,
                    "toHash": to_hash,
                    "type": change,
                }
            ],
        }
    ).encode()


def cloud_headers(body: bytes, secret: bytes = SECRET, event: str = "repo:push") -> dict[str, str]:
    return {
        "X-Event-Key": event,
        "X-Hook-UUID": "cb8e5c2f-3a5b-4d1e-9c43-2b6a1e4f7d10",
        "X-Request-UUID": "afe4b6e1-3f86-4c5c-9b4c-7e2d2d3c1a11",
        "X-Attempt-Number": "1",
        "X-Hub-Signature": f"sha256={sign(secret, body)}",
    }


def data_center_headers(body: bytes, secret: bytes = SECRET, event: str = "repo:refs_changed") -> dict[str, str]:
    return {
        "X-Request-Id": "b8d0e3a5-1f77-4e0c-8c5d-5a7d1c2e9f30",
        "X-Event-Key": event,
        "X-Hub-Signature": f"sha256={sign(secret, body)}",
    }


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (cloud_push(cloud_change("main")), cloud_headers),
        (cloud_push(cloud_change("feature"), cloud_change("main")), cloud_headers),  # one push, two branches
        (data_center_push(), data_center_headers),
    ],
    ids=["cloud", "cloud-two-branches", "data-center"],
)
def test_a_signed_push_to_the_branch_is_accepted_with_its_commit(body: bytes, headers: Any) -> None:
    delivery = handle(Provider.BITBUCKET, headers(body), body, SECRET, "main")
    assert (delivery.verdict, delivery.revision) == (Verdict.ACCEPTED, NEW)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (cloud_push(cloud_change("feature")), cloud_headers),
        (data_center_push(ref="refs/heads/feature"), data_center_headers),
        (data_center_push(ref="refs/tags/v1"), data_center_headers),
    ],
    ids=["cloud", "data-center", "data-center-tag"],
)
def test_a_push_to_another_branch_is_ignored(body: bytes, headers: Any) -> None:
    delivery = handle(Provider.BITBUCKET, headers(body), body, SECRET, "main")
    assert delivery.verdict is Verdict.IGNORED
    assert delivery.detail == "push does not move refs/heads/main"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (cloud_push(cloud_change("main", new=None)), cloud_headers),
        (data_center_push(change="DELETE", to_hash="0" * 40), data_center_headers),
    ],
    ids=["cloud", "data-center"],
)
def test_a_deleted_branch_is_looked_at_but_names_no_commit(body: bytes, headers: Any) -> None:
    delivery = handle(Provider.BITBUCKET, headers(body), body, SECRET, "main")
    assert (delivery.verdict, delivery.revision) == (Verdict.ACCEPTED, "")


@pytest.mark.parametrize("event", ["diagnostics:ping", "pullrequest:created", "pr:opened", ""])
def test_other_events_are_ignored(event: str) -> None:
    body = data_center_push()
    delivery = handle(Provider.BITBUCKET, data_center_headers(body, event=event), body, SECRET, "main")
    assert delivery.verdict is Verdict.IGNORED


def tampered(headers: dict[str, str]) -> dict[str, str]:
    return headers | {"X-Hub-Signature": headers["X-Hub-Signature"][:-1] + "0"}


@pytest.mark.parametrize(
    "headers",
    [
        cloud_headers(cloud_push(cloud_change("main")), secret=b"another-secret"),  # signed with another secret
        cloud_headers(cloud_push(cloud_change("main", new=OLD))),  # the signature of another body
        tampered(cloud_headers(cloud_push(cloud_change("main")))),
        {"X-Event-Key": "repo:push"},  # no signature: a webhook configured without a secret
        {"X-Event-Key": "repo:push", "X-Hub-Signature": "sha1=" + "0" * 40},  # another algorithm
        {  # GitHub's header name is not Bitbucket's
            "X-Event-Key": "repo:push",
            "X-Hub-Signature-256": f"sha256={sign(SECRET, cloud_push(cloud_change('main')))}",
        },
    ],
    ids=["wrong-secret", "other-body", "tampered", "missing", "sha1", "github-header"],
)
def test_a_bad_signature_is_refused(headers: dict[str, str]) -> None:
    body = cloud_push(cloud_change("main"))
    assert handle(Provider.BITBUCKET, headers, body, SECRET, "main").verdict is Verdict.UNAUTHORIZED


def test_a_redelivery_is_known_by_its_request_id() -> None:
    body = data_center_push()
    assert delivery_id(Provider.BITBUCKET, cloud_headers(body)) == "bitbucket:afe4b6e1-3f86-4c5c-9b4c-7e2d2d3c1a11"
    assert (
        delivery_id(Provider.BITBUCKET, data_center_headers(body)) == "bitbucket:b8d0e3a5-1f77-4e0c-8c5d-5a7d1c2e9f30"
    )


def test_the_agent_serves_bitbucket_at_its_own_path(tmp_path: Path) -> None:
    secret = tmp_path / "bitbucket-secret"
    secret.write_bytes(SECRET + b"\n")
    pushes: list[tuple[Provider, str]] = []
    endpoints = Endpoints(
        "main", {Provider.BITBUCKET: secret}, lambda p, rev: pushes.append((p, rev)), lambda: (True, "")
    )
    server = HttpServer("127.0.0.1", 0, endpoints)
    server.start()
    try:
        body = data_center_push()

        def post(headers: dict[str, str]) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                conn.request("POST", "/webhooks/bitbucket", body=body, headers=headers)
                return conn.getresponse().status
            finally:
                conn.close()

        assert post(data_center_headers(body, secret=b"another-secret")) == 401
        assert post(data_center_headers(body)) == 202
    finally:
        server.stop()
    assert pushes == [(Provider.BITBUCKET, NEW)]
