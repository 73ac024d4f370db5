"""The small interfaces behind which every side effect lives (Kubernetes, Git, clock, metrics).

Stages take these, never concrete clients, so they run in unit tests with small fakes; the real adapters live
in ``gitsync.adapters`` and are tested against real servers (kubelab, real Git repositories, Prometheus).
Append new ports here; keep each one as small as its callers need.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gitsync.model import AppEnv, Json, ObjectId


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch; the only source of "now" outside the clock adapter."""

    def now(self) -> float: ...


class WatchEventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: WatchEventType
    object: Json


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: tuple[Json, ...]
    resource_version: str


class Cluster(Protocol):
    """The Kubernetes API as gitsync uses it: plain dicts in and out, identity by ``ObjectId``.

    Errors are raised as ``gitsync.errors.KubeError`` subclasses carrying the object id first.
    """

    def get(self, ref: ObjectId) -> Json | None:
        """The live object, or None when it does not exist."""
        ...

    def list(self, group: str, kind: str, namespace: str = "", label_selector: str = "") -> ObjectList: ...

    def apply(self, body: Json, *, dry_run: bool = False, force: bool = False) -> Json:
        """Server-side apply with field manager ``gitsync``; returns the resulting (or would-be) object."""
        ...

    def delete(self, ref: ObjectId, *, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        ...

    def watch(
        self,
        group: str,
        kind: str,
        namespace: str = "",
        label_selector: str = "",
        resource_version: str = "",
        timeout_seconds: int = 300,
    ) -> Iterator[WatchEvent]: ...


class LiveReader(Protocol):
    """Read access to live objects. The Cluster answers with a GET; the watch-fed cache answers from memory,
    which is what makes a no-op reconcile nearly free."""

    def get(self, ref: ObjectId) -> Json | None: ...


class StateStore(Protocol):
    """Per app-env state kept in the cluster, one document per ``part`` ("inventory", "status", "history",
    "rollout"), so a restarted agent resumes where the last one stopped.

    Writes are optimistic: ``save`` takes the ``version`` returned by ``load`` ("" for a new document) and
    raises ``TransientError`` when someone else wrote in between.
    """

    def load(self, key: AppEnv, namespace: str, part: str) -> tuple[Json, str]:
        """The stored document (``{}`` when absent) and its version."""
        ...

    def save(self, key: AppEnv, namespace: str, part: str, data: Json, version: str) -> str:
        """Store ``data``; returns the new version."""
        ...
