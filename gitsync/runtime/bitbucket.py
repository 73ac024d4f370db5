"""Bitbucket's push webhooks: which branch moved and to which commit. Pure, no I/O.

Bitbucket Cloud and Bitbucket Data Center (Server) sign alike, in ``X-Hub-Signature: sha256=<hex HMAC-SHA256 of
the body>`` (the header GitHub uses for SHA-1; ``gitsync.runtime.webhooks.verify`` checks it), and name the
event in ``X-Event-Key``, but their push payloads differ (Atlassian's "Event payloads" pages):

- Cloud, ``repo:push``: ``push.changes[]``, each with ``new`` (``{"type": "branch", "name": "main", "target":
  {"hash": ...}}``, null when the branch was deleted) and ``old``;
- Data Center, ``repo:refs_changed``: ``changes[]``, each with ``refId`` (``refs/heads/main``), ``fromHash``,
  ``toHash`` and ``type`` (``ADD``, ``UPDATE``, ``DELETE``).
One push may move several branches: only the watched one counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["DELIVERY_HEADERS", "EVENT_HEADER", "PUSH_EVENTS", "SIGNATURE_HEADER", "branch_head"]

SIGNATURE_HEADER = "X-Hub-Signature"
EVENT_HEADER = "X-Event-Key"
PUSH_EVENTS = frozenset({"repo:push", "repo:refs_changed"})
"""Cloud's and Data Center's push events; anything else (``diagnostics:ping``, pull requests) is not a push."""
DELIVERY_HEADERS = ("X-Request-UUID", "X-Request-Id")
"""Cloud's and Data Center's id of one delivery (the same on a redelivery)."""


def branch_head(payload: Mapping[str, Any], branch: str) -> str | None:
    """The commit the push moved ``branch`` to; "" when it touched the branch but names no commit to trust (the
    branch was deleted); None when the push did not touch the branch (or the payload has neither shape)."""
    push = payload.get("push")
    if isinstance(push, Mapping):
        return _cloud(push.get("changes"), branch)
    return _data_center(payload.get("changes"), f"refs/heads/{branch}")


def _cloud(changes: Any, branch: str) -> str | None:
    found: str | None = None
    for change in changes if isinstance(changes, list) else ():
        if not isinstance(change, Mapping):
            continue
        new, old = change.get("new"), change.get("old")
        if _is_branch(new, branch):
            target = new.get("target")
            found = str(target.get("hash") or "") if isinstance(target, Mapping) else ""
        elif new is None and _is_branch(old, branch):
            found = ""
    return found


def _is_branch(ref: Any, branch: str) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(ref, Mapping) and ref.get("type") == "branch" and ref.get("name") == branch


def _data_center(changes: Any, ref: str) -> str | None:
    found: str | None = None
    for change in changes if isinstance(changes, list) else ():
        if not isinstance(change, Mapping):
            continue
        described = change.get("ref")
        named = change.get("refId") or (described.get("id") if isinstance(described, Mapping) else None)
        if named == ref:
            found = "" if change.get("type") == "DELETE" else str(change.get("toHash") or "")
    return found
