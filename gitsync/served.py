"""Parents before children: waiting, bounded, for a Namespace to be Active, for a CRD's kind to be served, and
for a CRD's changed schema to be the one its custom resources are validated with.

A custom resource cannot be dry-run or applied until its CRD is Established and its kind is in discovery, which
lags the condition by a moment. Both apply (a CRD it just applied) and plan (a custom resource whose CRD another
app of the environment installed a moment ago) wait here, at most ``PARENT_WAIT_SECONDS``, and then fail with
one line naming the CRD. Waiting for health is never done here: only for what a request needs to be served.

Contract: reads only (GET and a metadata LIST of CRDs); the clock and sleep are parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from gitsync.errors import ForbiddenError, InvalidObjectError, KindNotServedError, TransientError
from gitsync.model import Json, ObjectId
from gitsync.ports import Cluster

__all__ = [
    "PARENT_WAIT_SECONDS",
    "SCHEMA_WAIT_SECONDS",
    "NotReadyError",
    "crd_of",
    "ready",
    "wait_ready",
    "when_schema_current",
    "when_served",
]

PARENT_WAIT_SECONDS = 30.0
"""Upper bound for a new Namespace to be Active, or a CRD Established and its kind served, before children go."""
POLL_SECONDS = 0.2
SCHEMA_WAIT_SECONDS = 2.0
"""Upper bound for a CRD's changed schema to be the one custom resources are validated with. The API server
rebuilds a CRD's handler from the update event, with no condition to wait for: measured on kubelab, 3 dry-runs in
20 made right after the update were still judged by the old schema, each for under 30 ms."""
SCHEMA_POLL_SECONDS = 0.05
CRD_GROUP, CRD_KIND = "apiextensions.k8s.io", "CustomResourceDefinition"

T = TypeVar("T")


class NotReadyError(TransientError):
    """A Namespace or CRD did not become usable in time (or an object did not go away for a recreate)."""


def ready(obj: Json) -> bool:
    """A Namespace is Active; a CRD is Established."""
    status = obj.get("status") or {}
    if obj.get("kind") == "Namespace":
        return status.get("phase") == "Active"
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def wait_ready(ref: ObjectId, obj: Json, cluster: Cluster, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once the Namespace or CRD ``ref`` (last read as ``obj``) is ``ready``; ``NotReadyError`` after the
    bound."""
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while not ready(obj):
        if time.monotonic() > deadline:
            state = "Active" if ref.kind == "Namespace" else "Established"
            raise NotReadyError(f"{ref}: not {state} after {PARENT_WAIT_SECONDS:.0f}s")
        sleep(POLL_SECONDS)
        obj = cluster.get(ref) or {}


def crd_of(group: str, kind: str, cluster: Cluster) -> Json | None:
    """The CRD defining ``kind`` in ``group``, if the cluster has one. CRDs are named ``<plural>.<group>``, so a
    metadata list narrows the candidates to the group's and only those are read in full (a CRD can be megabytes)."""
    listed = cluster.list(CRD_GROUP, CRD_KIND, metadata_only=True).items
    for item in listed:
        name = str((item.get("metadata") or {}).get("name", ""))
        if not name.endswith(f".{group}"):
            continue
        crd = cluster.get(ObjectId(CRD_GROUP, CRD_KIND, "", name))
        names = ((crd or {}).get("spec") or {}).get("names") or {}
        if crd is not None and names.get("kind") == kind and (crd.get("spec") or {}).get("group") == group:
            return crd
    return None


def when_served(
    ref: ObjectId, request: Callable[[], T], cluster: Cluster, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``request()`` (a dry-run or apply of ``ref``), waiting first, bounded, when ``ref``'s kind is not served
    yet but its CRD exists: until the CRD is Established and the kind is in discovery. ``KindNotServedError`` as
    is when no CRD defines the kind (or CRDs cannot be read); ``NotReadyError`` naming the CRD when the bound
    passes."""
    try:
        return request()
    except KindNotServedError:
        try:
            crd = crd_of(ref.group, ref.kind, cluster)
        except ForbiddenError:  # namespace-scoped RBAC cannot read CRDs: the kind is simply not served
            crd = None
        if crd is None:
            raise
    crd_id = ObjectId.of(crd)
    wait_ready(crd_id, crd, cluster, sleep)
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while True:
        try:
            return request()
        except KindNotServedError as e:
            if time.monotonic() > deadline:
                raise NotReadyError(
                    f"{crd_id}: Established, but {ref.kind}.{ref.group} not served after {PARENT_WAIT_SECONDS:.0f}s"
                ) from e
            sleep(POLL_SECONDS)


def when_schema_current(request: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """``request()`` (a dry-run of a custom resource whose CRD was changed a moment ago), asked again while the
    server refuses it, up to ``SCHEMA_WAIT_SECONDS``: the refusal may come from the schema being replaced. The last
    refusal is raised as is."""
    deadline = time.monotonic() + SCHEMA_WAIT_SECONDS
    while True:
        try:
            return request()
        except InvalidObjectError:
            if time.monotonic() > deadline:
                raise
            sleep(SCHEMA_POLL_SECONDS)
