"""Receivers and what is sent to them: the ``Receiver`` settings (``notifications:`` in agent.yaml), the request
body of each format and its headers. Pure, no I/O: the URL and the signing key are passed in, read by the sender
from their files at each delivery (so a rotated Secret takes effect without a restart).

- ``generic``: the notification as JSON, signed with HMAC-SHA256 over the exact body bytes,
  ``X-Gitsync-Signature: sha256=<hex>``, the notice in ``X-Gitsync-Event``;
- ``slack``: a Slack-compatible incoming-webhook body, ``{"text": ..., "blocks": [...]}`` (Mattermost, Rocket.Chat
  and Teams' Slack-compatible endpoints take it too). Its URL is the credential, so it only comes from a file.

Both carry ``Idempotency-Key: <key>`` (and ``X-Gitsync-Delivery``, the same value): the same change has the same
key however often it is sent, so a receiver drops a repeat delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gitsync.notify.notices import Notice, Notification

__all__ = ["SIGNATURE_HEADER", "Format", "Receiver", "request", "signature"]

SIGNATURE_HEADER = "X-Gitsync-Signature"


class Format(StrEnum):
    GENERIC = "generic"
    SLACK = "slack"


@dataclass(frozen=True, slots=True)
class Receiver:
    """One ``notifications:`` entry. Empty filters match everything."""

    name: str
    format: Format
    url: str = ""
    """A generic receiver's URL written in agent.yaml (no credentials in it); otherwise ``url_file``."""
    url_file: Path | None = None
    secret_file: Path | None = None
    """The HMAC key of a generic receiver (a mounted Secret)."""
    events: frozenset[Notice] = frozenset()
    envs: frozenset[str] = frozenset()
    apps: frozenset[str] = frozenset()

    def wants(self, n: Notification) -> bool:
        return all(
            not allowed or value in allowed
            for allowed, value in ((self.events, n.notice), (self.envs, n.env), (self.apps, n.app))
        )


_TITLE: Mapping[Notice, str] = {
    Notice.SYNC_FAILED: ":x: sync failed",
    Notice.DRIFT_FOUND: ":warning: drift found",
    Notice.DRIFT_HEALED: ":wrench: drift healed",
    Notice.ROLLOUT_STARTED: ":arrows_counterclockwise: rollout started",
    Notice.ROLLOUT_PAUSED: ":double_vertical_bar: rollout paused, waiting for a human",
    Notice.ROLLOUT_ABORTED: ":rewind: rollout aborted",
    Notice.SUCCEEDED: ":white_check_mark: succeeded",
    Notice.PROMOTION_PROPOSED: ":inbox_tray: promotion proposed",
    Notice.PROMOTION_MERGED: ":rocket: promotion merged",
    Notice.ROLLBACK_WRITTEN: ":leftwards_arrow_with_hook: rollback written",
}


def signature(secret: bytes, body: bytes) -> str:
    """The value of ``X-Gitsync-Signature``: what a receiver recomputes and compares in constant time."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def request(receiver: Receiver, n: Notification, secret: bytes) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery of ``n`` to ``receiver`` (``secret``: its HMAC key, or empty)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "gitsync-notify",
        "Idempotency-Key": n.key,
        "X-Gitsync-Delivery": n.key,
        "X-Gitsync-Event": n.notice.value,
    }
    if receiver.format is Format.SLACK:
        return json.dumps(_slack(n), separators=(",", ":")).encode(), headers
    body = json.dumps(n.to_json(), sort_keys=True, separators=(",", ":")).encode()
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    return body, headers


def _slack(n: Notification) -> dict[str, object]:
    subject = f"*{n.app}@{n.env}*: {_TITLE[n.notice]}"
    return {
        "text": f"{n.app}@{n.env}: {_TITLE[n.notice]}: {n.message}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{subject}\n{n.message}"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"revision `{n.revision[:12]}` · namespace `{n.namespace}` · {n.outcome}",
                    }
                ],
            },
        ],
    }
