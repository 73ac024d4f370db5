"""The dry-run memo: settle an object without a dry-run, or without even its content, when nothing changed.

See ``DryRunMemo``. Kept in the inventory (``gitsync.inventory``) so one-shot commands benefit too. Pure apart
from a lock; no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from gitsync.model import Json, Manifest, ObjectId, canonical, fingerprint
from gitsync.normalise import ignored_pointers, is_secret, normalise

__all__ = ["GENERATION_KINDS", "DryRunMemo"]


class DryRunMemo:
    """Remembers, per object, what the last dry-run or apply that left nothing to change saw: the manifest's
    fingerprint, a hash of the normalised live object and its resourceVersion (and, for workload kinds, its
    generation and a hash of its normalised metadata). While the manifest and live content stay the same, a new
    dry-run would find nothing either, so it is skipped.

    The resourceVersion is the fast path: the server changes it on every write, so a live object still at the
    remembered one has the remembered content and needs no normalising or hashing. When it moved, the normalised
    content decides, so a controller writing ``status`` does not force a dry-run; the new resourceVersion is then
    known in this process only, as changing the exported entries would make a no-op sync write its inventory
    (``settle`` folds them in when the inventory is written anyway). For the kinds in ``GENERATION_KINDS`` the
    server bumps ``metadata.generation`` on every change outside metadata and status, so an unchanged generation
    plus unchanged metadata is unchanged content: decided from a metadata list, without fetching the object.
    Persisted with the inventory (``export``) so one-shot commands benefit too; older, shorter entries still read.
    Safe to share between threads: entries are replaced whole under a lock. Secrets are never memoised: a hash of
    their content would be stored in a ConfigMap, and a short password can be guessed from it.
    """

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self._seen: dict[str, str] = dict(entries or {})
        self._moved: dict[str, str] = {}
        """resourceVersions found, by content, to be as good as the one in the entry of the same key."""
        self._lock = threading.Lock()

    def unchanged(self, ref: ObjectId, manifest: Manifest, live: Json) -> bool:
        entry = self._entry(ref, manifest)
        if entry is None:
            return False
        current = _resource_version(live)
        if current and current in (entry.version, entry.moved):
            return True
        if entry.live != _live_digest(manifest, live):
            return False
        self._moved_to(ref, entry, current)
        return True

    def unchanged_meta(self, ref: ObjectId, manifest: Manifest, meta: Json | None) -> bool:
        """Like ``unchanged`` for a caller that has only the object's metadata (a metadata list item): true at the
        remembered resourceVersion, or, for ``GENERATION_KINDS``, at the remembered generation and metadata."""
        entry = self._entry(ref, manifest)
        if entry is None or meta is None:
            return False
        current = _resource_version(meta)
        if current and current in (entry.version, entry.moved):
            return True
        if not entry.generation or _generation(meta) != entry.generation:
            return False
        if entry.metadata != _metadata_digest(manifest, meta):
            return False
        self._moved_to(ref, entry, current)
        return True

    def applied(self, ref: ObjectId, manifest: Manifest) -> bool:
        """Whether this very manifest was applied or found settled (its entry is remembered), whatever is live now:
        what tells a finished Job its TTL removed (``Manifest.runs_once``) from one never created."""
        return self._entry(ref, manifest) is not None

    def _moved_to(self, ref: ObjectId, entry: _MemoEntry, current: str) -> None:
        if not current:
            return
        with self._lock:
            if self._seen.get(str(ref)) == entry.text:  # not replaced meanwhile by a dry-run or apply of it
                if entry.version:
                    self._moved[str(ref)] = current
                else:  # written before resourceVersions were kept: upgraded once, the next sync saves it
                    self._seen[str(ref)] = entry.at(current).text

    def _entry(self, ref: ObjectId, manifest: Manifest) -> _MemoEntry | None:
        """The entry of ``ref`` when ``manifest`` is the remembered one."""
        if is_secret(ref):
            return None
        with self._lock:
            text, moved = self._seen.get(str(ref)), self._moved.get(str(ref))
        if text is None:
            return None
        entry = _MemoEntry.parse(text, moved)
        return entry if entry.manifest == manifest.fingerprint else None

    def remember(self, ref: ObjectId, manifest: Manifest, live: Json) -> None:
        if is_secret(ref):
            return
        generation = _generation(live) if ref.kind in GENERATION_KINDS else ""
        entry = _MemoEntry(
            manifest=manifest.fingerprint,
            live=_live_digest(manifest, live),
            version=_resource_version(live),
            generation=generation,
            metadata=_metadata_digest(manifest, live) if generation else "",
        )
        with self._lock:
            self._seen[str(ref)] = entry.text
            self._moved.pop(str(ref), None)

    def forget(self, ref: ObjectId) -> None:
        with self._lock:
            self._seen.pop(str(ref), None)
            self._moved.pop(str(ref), None)

    def settle(self) -> None:
        """Make the resourceVersions found by content since the last export part of the entries: done when the
        inventory is written anyway, so the next one-shot command takes the fast path at no extra write."""
        with self._lock:
            for key, current in self._moved.items():
                text = self._seen.get(key)
                if text is not None:
                    self._seen[key] = _MemoEntry.parse(text).at(current).text
            self._moved.clear()

    def export(self, refs: Collection[ObjectId]) -> dict[str, str]:
        """The entries of ``refs`` as JSON-ready text
        (``<manifest>:<live>:<resourceVersion>[:<generation>:<metadata>]``)."""
        wanted = {str(ref) for ref in refs}
        with self._lock:
            return {k: v for k, v in sorted(self._seen.items()) if k in wanted}


GENERATION_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "CustomResourceDefinition"}
)
"""Kinds whose ``status`` moves after an apply and whose API strategies bump ``metadata.generation`` on every
spec change (a Deployment's also on annotation changes): the workloads, and CRDs, whose status the API server
writes just after creating them (names accepted, established), so the remembered resourceVersion of every new
CRD is stale at once, and real operators' CRDs are hundreds of kilobytes each to fetch. Kinds without a
generation (ConfigMap, Service) or not known to bump it on every change are decided by content."""


@dataclass(frozen=True, slots=True)
class _MemoEntry:
    manifest: str
    live: str
    version: str = ""
    generation: str = ""
    metadata: str = ""
    moved: str | None = field(default=None, compare=False)
    """A resourceVersion known in this process to hold the same content (not persisted)."""

    @classmethod
    def parse(cls, text: str, moved: str | None = None) -> _MemoEntry:
        manifest, live, version, generation, metadata = (text.split(":") + [""] * 5)[:5]
        return cls(manifest, live, version, generation, metadata, moved)

    @property
    def text(self) -> str:
        parts = [self.manifest, self.live, self.version, self.generation, self.metadata]
        while len(parts) > 2 and not parts[-1]:  # older entries stay as short as they were written
            parts.pop()
        return ":".join(parts)

    def at(self, version: str) -> _MemoEntry:
        return _MemoEntry(self.manifest, self.live, version, self.generation, self.metadata)


def _live_digest(manifest: Manifest, live: Json) -> str:
    return fingerprint(canonical(normalise(live, ignored_pointers(manifest.body))))


def _metadata_digest(manifest: Manifest, obj: Json) -> str:
    """Hash of the normalised ``metadata`` of a full object or of a metadata list item (the same for both)."""
    return fingerprint(canonical(normalise(obj, ignored_pointers(manifest.body)).get("metadata") or {}))


def _resource_version(obj: Json) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _generation(obj: Json) -> str:
    generation = (obj.get("metadata") or {}).get("generation")
    return str(generation) if generation else ""
