"""Webhook signatures for every provider: valid ones accepted, anything else refused, pushes parsed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitsync.runtime.config import Provider
from gitsync.runtime.webhooks import MAX_BODY, Verdict, handle, sign, verify

SECRET = b"s3cret"
SHA = "a" * 40


def push(ref: str = "refs/heads/main", after: str = SHA, provider: Provider = Provider.GITHUB) -> bytes:
    if provider is Provider.BITBUCKET:  # Bitbucket Cloud's shape; both of Atlassian's: test_webhooks_bitbucket.py
        branch = {"type": "branch", "name": ref.removeprefix("refs/heads/"), "target": {"hash": after}}
        return json.dumps({"push": {"changes": [{"new": branch}]}}).encode()
    return json.dumps({"ref": ref, "after": after}).encode()


def signed(provider: Provider, body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    mac = sign(secret, body)
    return {
        Provider.GITHUB: {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Event": "push"},
        Provider.GITLAB: {"X-Gitlab-Token": secret.decode(), "X-Gitlab-Event": "Push Hook"},
        Provider.GITEA: {"X-Gitea-Signature": mac, "X-Gitea-Event": "push"},
        Provider.BITBUCKET: {"X-Hub-Signature": f"sha256={mac}", "X-Event-Key": "repo:push"},
        Provider.GENERIC: {"X-Gitsync-Signature": f"sha256={mac}"},
    }[provider]


@pytest.mark.parametrize("provider", list(Provider))
def test_valid_push_for_the_branch_is_accepted_with_its_revision(provider: Provider) -> None:
    body = push(provider=provider)
    delivery = handle(provider, signed(provider, body), body, SECRET, "main")
    assert (delivery.verdict, delivery.revision) == (Verdict.ACCEPTED, SHA)


# GitLab sends a plain token, not a body signature, so a tampered body is only a case for the others.
BAD_SIGNATURES = [
    (provider, case)
    for provider in Provider
    for case in ("wrong-secret", "missing", "tampered-body")
    if not (provider is Provider.GITLAB and case == "tampered-body")
]


@pytest.mark.parametrize(("provider", "case"), BAD_SIGNATURES)
def test_bad_or_missing_signature_is_unauthorized(provider: Provider, case: str) -> None:
    body = push(provider=provider)
    headers = {
        "wrong-secret": signed(provider, body, b"other"),
        "missing": {},
        "tampered-body": signed(provider, push(after="b" * 40, provider=provider)),
    }[case]
    assert handle(provider, headers, body, SECRET, "main").verdict is Verdict.UNAUTHORIZED


def test_header_names_are_case_insensitive() -> None:
    body = push()
    headers = {k.lower(): v for k, v in signed(Provider.GITHUB, body).items()}
    assert handle(Provider.GITHUB, headers, body, SECRET, "main").verdict is Verdict.ACCEPTED


@pytest.mark.parametrize(
    ("body", "headers_extra", "verdict"),
    [
        (push(ref="refs/heads/feature"), {}, Verdict.IGNORED),
        (push(ref="refs/tags/v1"), {}, Verdict.IGNORED),
        (push(), {"X-GitHub-Event": "ping"}, Verdict.IGNORED),
        (b"not json", {}, Verdict.BAD_REQUEST),
        (push(after="0" * 40), {}, Verdict.ACCEPTED),
    ],
)
def test_github_events_and_branches(body: bytes, headers_extra: dict[str, str], verdict: Verdict) -> None:
    headers = {**signed(Provider.GITHUB, body), **headers_extra}
    assert handle(Provider.GITHUB, headers, body, SECRET, "main").verdict is verdict


def test_generic_empty_body_means_look_now() -> None:
    delivery = handle(Provider.GENERIC, signed(Provider.GENERIC, b""), b"", SECRET, "main")
    assert (delivery.verdict, delivery.revision) == (Verdict.ACCEPTED, "")


def test_oversized_body_is_refused_before_verifying() -> None:
    body = b"x" * (MAX_BODY + 1)
    assert handle(Provider.GITHUB, signed(Provider.GITHUB, body), body, SECRET, "main").verdict is Verdict.TOO_LARGE


def test_empty_secret_never_verifies() -> None:
    assert not verify(Provider.GITLAB, {"X-Gitlab-Token": ""}, b"", b"")


@given(st.binary(max_size=512), st.binary(min_size=1, max_size=64))
def test_only_the_true_mac_verifies(body: bytes, secret: bytes) -> None:
    good = {"X-Gitsync-Signature": f"sha256={sign(secret, body)}"}
    assert verify(Provider.GENERIC, good, body, secret)
    flipped = sign(secret, body + b"!")
    assert not verify(Provider.GENERIC, {"X-Gitsync-Signature": f"sha256={flipped}"}, body, secret)
