"""Who may see the dashboard the agent serves: a bearer token, reviewed and authorised by the Kubernetes API.

The agent's dashboard reads with the agent's own permissions, so it must not show more than the person asking
may read themselves: each request carries ``Authorization: Bearer <token>``; a ``TokenReview`` says whose it is
(401 when absent, invalid or expired) and a ``SubjectAccessReview`` per namespace of the board asks whether that
user may ``get`` ConfigMaps there, which is where the agent keeps the state the dashboard shows (403 when not).
Answers are kept ``CACHE_SECONDS`` per token (by its hash; the token itself is never kept or logged), so a page
and its event stream cost two reviews, not two per request. ``gitsync dashboard`` on 127.0.0.1 reads with the
user's own kubeconfig and needs none of this (``Open``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from gitsync import log as logging
from gitsync.errors import GitsyncError
from gitsync.model import Json

__all__ = ["CACHE_SECONDS", "Access", "Decision", "Open", "TokenAccess"]

CACHE_SECONDS = 10.0
log = logging.get("gitsync.dashboard")


@dataclass(frozen=True, slots=True)
class Decision:
    status: int
    """200 allowed, 401 who are you, 403 not allowed, 503 the API server could not answer."""
    reason: str
    user: str = ""


class Access(Protocol):
    def check(self, authorization: str | None) -> Decision: ...


class Open:
    """The local dashboard: the person who started it reads with their own kubeconfig."""

    def check(self, authorization: str | None) -> Decision:
        return Decision(200, "local")


class Reviewer(Protocol):
    """The Kubernetes API's create (``ports.Cluster.create``), which is all a review is."""

    def create(self, body: Json, *, dry_run: bool = False) -> Json: ...


class TokenAccess:
    """Bearer tokens checked by TokenReview, authorised by SubjectAccessReview (``get`` ``configmaps`` in each
    of ``namespaces()``)."""

    def __init__(self, api: Reviewer, namespaces: Callable[[], Iterable[str]]) -> None:
        self._api = api
        self._namespaces = namespaces
        self._cache: dict[str, tuple[float, Decision]] = {}
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> Decision:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Decision(401, "a bearer token is required (Authorization: Bearer <token>)")
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None and now - cached[0] < CACHE_SECONDS:
                return cached[1]
        try:
            decision = self._review(token)
        except GitsyncError as e:
            log.warning("dashboard.review_failed", error=str(e))
            return Decision(503, "the Kubernetes API could not review the token; try again")
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < CACHE_SECONDS}
            self._cache[digest] = (now, decision)
        if decision.status != 200:
            log.info("dashboard.refused", status=decision.status, user=decision.user, reason=decision.reason)
        return decision

    def _review(self, token: str) -> Decision:
        review = self._api.create(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        )
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return Decision(401, "the token is not valid (expired, revoked or from another cluster)")
        user = status.get("user") or {}
        name = str(user.get("username", ""))
        namespaces = sorted(self._namespaces())
        if not namespaces:  # nothing to authorise against yet: refuse rather than let anyone in for a while
            return Decision(403, "no gitsync state in the cluster yet; try again once the agent recorded some", name)
        for namespace in namespaces:
            answer = self._api.create(
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {
                        "user": name,
                        "groups": list(user.get("groups") or []),
                        "uid": str(user.get("uid", "")),
                        "extra": dict(user.get("extra") or {}),
                        "resourceAttributes": {
                            "namespace": namespace,
                            "verb": "get",
                            "resource": "configmaps",
                        },
                    },
                }
            )
            if not (answer.get("status") or {}).get("allowed"):
                return Decision(403, f"{name} may not get configmaps in namespace {namespace}", name)
        return Decision(200, "allowed", name)
