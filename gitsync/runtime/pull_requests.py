"""Pull-request webhooks: which deliveries ask for a plan comment, parsed from each forge's payload.

Contract: pure, no I/O; called by ``gitsync.runtime.webhooks.handle`` after the signature is verified. A pull
request opened, reopened or pushed to, into the watched branch, is a ``PullRequestEvent``; anything else about
pull requests (closed, labelled, edited, into another branch) is ignored. What each forge sends:

- GitHub: ``X-GitHub-Event: pull_request``, ``action`` ``opened`` / ``reopened`` / ``synchronize``, the pull
  request in ``pull_request`` (``number``, ``head.sha``, ``head.ref``, ``base.sha``, ``base.ref``);
- Gitea / Forgejo: ``X-Gitea-Event: pull_request``, ``action`` ``opened`` / ``reopened`` / ``synchronized``, the
  same ``pull_request`` object, with ``merge_base`` (where the branch forked: its plan is of the merge when the
  base moved on since);
- GitLab: ``X-Gitlab-Event: Merge Request Hook``, ``object_attributes`` with ``action`` ``open`` / ``reopen`` /
  ``update``, ``iid``, ``last_commit.id``, ``source_branch``, ``target_branch`` (no base commit: the agent uses
  the branch head).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitsync.runtime.config import Provider

__all__ = ["PULL_REQUEST_EVENTS", "PullRequestEvent", "parse"]

PULL_REQUEST_EVENTS = {
    Provider.GITHUB: "pull_request",
    Provider.GITEA: "pull_request",
    Provider.GITLAB: "Merge Request Hook",
}
"""The event header value of a pull-request delivery, per provider."""

_ACTIONS = {
    Provider.GITHUB: {"opened", "reopened", "synchronize"},
    Provider.GITEA: {"opened", "reopened", "synchronized"},
    Provider.GITLAB: {"open", "reopen", "update"},
}
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True, slots=True)
class PullRequestEvent:
    """A pull request whose plan comment is due: ``head`` is the pushed commit, ``base`` the commit it merges
    into when the forge says ("" otherwise: the base branch's head)."""

    number: int
    head: str
    base: str
    head_ref: str
    base_ref: str
    merge_base: str = ""
    """Where the branch forked from the base, when the forge says (Gitea); "" otherwise."""


def parse(provider: Provider, payload: Mapping[str, Any], branch: str) -> PullRequestEvent | str:
    """The event, or why the delivery is ignored."""
    if provider is Provider.GITLAB:
        attributes = _mapping(payload.get("object_attributes"))
        action = attributes.get("action")
        number, head = attributes.get("iid"), _mapping(attributes.get("last_commit")).get("id")
        base, head_ref, base_ref = "", attributes.get("source_branch"), attributes.get("target_branch")
        merge_base = ""
    elif provider in (Provider.GITHUB, Provider.GITEA):
        pull = _mapping(payload.get("pull_request"))
        action = payload.get("action")
        number = payload.get("number", pull.get("number"))
        head, head_ref = _mapping(pull.get("head")).get("sha"), _mapping(pull.get("head")).get("ref")
        base, base_ref = _mapping(pull.get("base")).get("sha") or "", _mapping(pull.get("base")).get("ref")
        merge_base = pull.get("merge_base") or ""
    else:
        return f"{provider} sends no pull-request events"
    if action not in _ACTIONS[provider]:
        return f"pull request action {str(action)[:40]!r} needs no plan"
    if base_ref != branch:
        return f"pull request into {str(base_ref)[:200]!r}, watching {branch}"
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        return "pull request without a number"
    if not isinstance(head, str) or not _SHA.match(head):
        return "pull request without a head commit"
    if not isinstance(base, str) or (base and not _SHA.match(base)):
        base = ""
    if not isinstance(merge_base, str) or not _SHA.match(merge_base):
        merge_base = ""
    return PullRequestEvent(number, head, base, str(head_ref or ""), branch, merge_base)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
