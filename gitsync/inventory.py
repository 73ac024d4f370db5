"""The inventory: which objects gitsync applied for one app-env, at which revision and render digest.

It is what prune subtracts the render from, so it must never forget an object that still exists: objects are
added as soon as they are applied (before prune), and removed only once deleted (a failed delete stays and is
retried). Stored through ``ports.StateStore`` as part ``"inventory"``; the id format is ``str(ObjectId)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from gitsync.model import AppEnv, ObjectId
from gitsync.ports import StateStore

__all__ = ["PART", "Inventory", "departed", "load", "save"]

PART = "inventory"


@dataclass(frozen=True, slots=True)
class Inventory:
    objects: frozenset[ObjectId] = frozenset()
    revision: str = ""
    digest: str = ""
    memo: Mapping[str, str] = field(default_factory=dict)
    """``memo.DryRunMemo`` entries of the inventory's objects, so even a one-shot ``gitsync diff`` skips the
    dry-runs of objects nobody touched since gitsync applied them."""
    version: str = ""
    """The store's version of the document this was loaded from ("" when new); used for optimistic writes."""

    def adding(self, refs: Iterable[ObjectId], *, revision: str = "", digest: str = "") -> Inventory:
        """A copy with ``refs`` added and, when given, a new revision and digest."""
        return replace(
            self,
            objects=self.objects | frozenset(refs),
            revision=revision or self.revision,
            digest=digest or self.digest,
        )

    def removing(self, refs: Iterable[ObjectId]) -> Inventory:
        return replace(self, objects=self.objects - frozenset(refs))

    def with_memo(self, memo: Mapping[str, str]) -> Inventory:
        return replace(self, memo=dict(memo))

    def same_content(self, other: Inventory) -> bool:
        mine = (self.objects, self.revision, self.digest, dict(self.memo))
        return mine == (other.objects, other.revision, other.digest, dict(other.memo))


def load(store: StateStore, key: AppEnv, namespace: str) -> Inventory:
    data, version = store.load(key, namespace, PART)
    return Inventory(
        objects=frozenset(ObjectId.parse(text) for text in data.get("objects", [])),
        revision=str(data.get("revision", "")),
        digest=str(data.get("digest", "")),
        memo={str(k): str(v) for k, v in (data.get("memo") or {}).items()},
        version=version,
    )


def save(store: StateStore, key: AppEnv, namespace: str, inventory: Inventory, previous: Inventory) -> Inventory:
    """Store ``inventory`` unless it equals ``previous`` (a no-op reconcile writes nothing); returns it with the
    new version. A concurrent writer makes the store raise a transient error."""
    if inventory.same_content(previous) and previous.version:
        return replace(inventory, version=previous.version)
    data = {
        "objects": sorted(str(ref) for ref in inventory.objects),
        "revision": inventory.revision,
        "digest": inventory.digest,
        "memo": dict(inventory.memo),
    }
    version = store.save(key, namespace, PART, data, previous.version)
    return replace(inventory, version=version)


def departed(store: StateStore, env: str, namespace: str, listed: Collection[str]) -> frozenset[AppEnv]:
    """The app-envs of ``env`` that have an inventory in ``namespace`` (what gitsync applied there and may prune)
    but whose app ``listed`` (``env.yaml``'s ``apps:``) no longer names: the apps that left their environment,
    found alike by the agent's discovery and by ``gitsync sync`` and ``diff`` (``gitsync.removal`` removes them)."""
    return frozenset(key for key in store.keys(env, namespace, PART) if key.app not in listed)
