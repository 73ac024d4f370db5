"""Webhook verification and push parsing for GitHub, GitLab, Gitea/Forgejo, Bitbucket and a generic HMAC sender.

Contract: pure, no I/O. Signatures are checked over the raw body bytes with ``hmac.compare_digest`` (constant
time), before the body is parsed at all. What each provider sends:

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``, event in ``X-GitHub-Event``;
- GitLab: ``X-Gitlab-Token: <the shared secret>`` (no signature), event in ``X-Gitlab-Event`` (``Push Hook``);
- Gitea / Forgejo: ``X-Gitea-Signature`` or ``X-Forgejo-Signature: <hex HMAC-SHA256>``, event in ``X-Gitea-Event``;
- Bitbucket Cloud and Data Center: ``X-Hub-Signature: sha256=<hex HMAC-SHA256>``, event in ``X-Event-Key``
  (``repo:push``, ``repo:refs_changed``), their own push payloads (``gitsync.runtime.bitbucket``);
- pull requests (GitHub, Gitea/Forgejo, GitLab): opened, reopened or pushed to, into the watched branch, they are
  accepted with a ``PullRequestEvent`` (``gitsync.runtime.pull_requests``): the agent posts the plan comment;
- generic: ``X-Gitsync-Signature: sha256=<hex HMAC-SHA256>``; the body may name ``ref`` and ``after`` or be empty
  (then it means "look at the watched branch now": the agent runs its poll at once, ``Agent.on_push``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gitsync.runtime import bitbucket
from gitsync.runtime.config import Provider
from gitsync.runtime.pull_requests import PullRequestEvent
from gitsync.runtime.pull_requests import parse as parse_pull_request

MAX_BODY = 1024 * 1024
"""Larger bodies are refused (413) before being read; GitHub caps its own payloads at 25 MB, pushes are small."""

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_ZERO = "0" * 40


class Verdict(StrEnum):
    """Outcome of one delivery; also the ``result`` label of the webhook metric."""

    ACCEPTED = "accepted"
    IGNORED = "ignored"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a verified delivery asks for: ``revision`` is the pushed commit ("" when the sender did not say)."""

    verdict: Verdict
    revision: str = ""
    detail: str = ""
    pull_request: PullRequestEvent | None = None
    """An accepted pull-request event (a plan comment is due), not a push."""


def sign(secret: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body``: what senders put in their signature headers (and what tests send)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


_SIGNATURE_HEADERS = {Provider.GITHUB: "X-Hub-Signature-256", Provider.BITBUCKET: bitbucket.SIGNATURE_HEADER}
"""The ``sha256=<hex>`` headers; the generic sender's is ``X-Gitsync-Signature``."""


def verify(provider: Provider, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    """True when the delivery carries a valid signature (or token) for ``secret``; False otherwise."""
    if not secret:
        return False
    if provider is Provider.GITLAB:
        token = _header(headers, "X-Gitlab-Token").encode()
        return bool(token) and hmac.compare_digest(token, secret)
    if provider is Provider.GITEA:
        given = _header(headers, "X-Gitea-Signature") or _header(headers, "X-Forgejo-Signature")
    else:
        header = _SIGNATURE_HEADERS.get(provider, "X-Gitsync-Signature")
        prefix, _, given = _header(headers, header).partition("=")
        if prefix != "sha256":
            return False
    return bool(given) and hmac.compare_digest(given.strip().lower().encode(), sign(secret, body).encode())


def _event(provider: Provider, headers: Mapping[str, str]) -> str:
    if provider is Provider.GITHUB:
        return _header(headers, "X-GitHub-Event")
    if provider is Provider.GITLAB:
        return {"Push Hook": "push", "System Hook": "push", "Merge Request Hook": "pull_request"}.get(
            _header(headers, "X-Gitlab-Event"), "other"
        )
    if provider is Provider.GITEA:
        return _header(headers, "X-Gitea-Event") or _header(headers, "X-Forgejo-Event")
    if provider is Provider.BITBUCKET:
        event = _header(headers, bitbucket.EVENT_HEADER)
        return "push" if event in bitbucket.PUSH_EVENTS else event
    return "push"


_DELIVERY_HEADERS = {
    Provider.GITHUB: ("X-GitHub-Delivery",),
    Provider.GITLAB: ("X-Gitlab-Event-UUID", "Idempotency-Key"),
    Provider.GITEA: ("X-Gitea-Delivery", "X-Forgejo-Delivery"),
    Provider.BITBUCKET: bitbucket.DELIVERY_HEADERS,
    Provider.GENERIC: ("X-Gitsync-Delivery",),
}


def delivery_id(provider: Provider, headers: Mapping[str, str]) -> str:
    """The sender's id of this delivery ("" when it sends none); a replay or redelivery carries the same id."""
    for name in _DELIVERY_HEADERS[provider]:
        value = _header(headers, name)
        if value:
            return f"{provider}:{value[:200]}"
    return ""


def handle(provider: Provider, headers: Mapping[str, str], body: bytes, secret: bytes, branch: str) -> Delivery:
    """Verify a delivery and decide what it means for the watched ``branch``.

    Only a verified push to ``refs/heads/<branch>`` is ACCEPTED; other events and other branches are IGNORED,
    so a sender's ``ping`` or a feature-branch push costs nothing.
    """
    if len(body) > MAX_BODY:
        return Delivery(Verdict.TOO_LARGE, detail=f"body over {MAX_BODY} bytes")
    if not verify(provider, headers, body, secret):
        return Delivery(Verdict.UNAUTHORIZED, detail="missing or invalid signature")
    event = _event(provider, headers)
    if event not in ("push", "pull_request"):
        return Delivery(Verdict.IGNORED, detail=f"event {event or 'unknown'} is not a push")
    if provider is Provider.GENERIC and not body.strip():
        return Delivery(Verdict.ACCEPTED)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Delivery(Verdict.BAD_REQUEST, detail="body is not JSON")
    if not isinstance(payload, dict):
        return Delivery(Verdict.BAD_REQUEST, detail="body is not a JSON object")
    if event == "pull_request":
        pull = parse_pull_request(provider, payload, branch)
        if isinstance(pull, str):
            return Delivery(Verdict.IGNORED, detail=pull)
        return Delivery(Verdict.ACCEPTED, revision=pull.head, pull_request=pull)
    if provider is Provider.BITBUCKET:
        head = bitbucket.branch_head(payload, branch)
        if head is None:
            return Delivery(Verdict.IGNORED, detail=f"push does not move refs/heads/{branch}")
        return Delivery(Verdict.ACCEPTED, revision=_trusted(head))
    ref = payload.get("ref")
    if provider is Provider.GENERIC and ref is None:
        ref = f"refs/heads/{branch}"
    if ref != f"refs/heads/{branch}":
        return Delivery(Verdict.IGNORED, detail=f"push to {str(ref)[:200]!r}, watching refs/heads/{branch}")
    return Delivery(Verdict.ACCEPTED, revision=_trusted(payload.get("after") or payload.get("checkout_sha") or ""))


def _trusted(revision: object) -> str:
    """``revision`` when it is a commit id; "" for a branch deletion (all-zero sha) or garbage: the agent still
    looks at the branch, but trusts no revision from the body."""
    if not isinstance(revision, str) or not _SHA.match(revision) or revision == _ZERO:
        return ""
    return revision
