"""The notifications of an app-env kept in the cluster (``gitsync.<app>.<env>.notify``, through the
``StateStore``), so the agent sends each notice once across restarts.

A notice is written here, with the receivers it is due to, *before* it is queued for sending and before the
status is written: a reconcile done again after a kill derives the same key and finds it here (not sent twice);
a notice queued but not yet delivered when the agent died is still listed as pending, and the next agent
process sends it (``pending``). What remains is the instant between a receiver's answer and the line that marks it
delivered: that delivery may be repeated, with the same ``Idempotency-Key``, for the receiver to drop.

The document keeps the newest ``LIMIT`` notices (delivered ones are the memory that stops a repeat), each
``{...notification, "pending": [receiver names]}``. Contains no secret: the notification only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from gitsync import log as logging
from gitsync.errors import TransientError
from gitsync.model import AppEnv, Json
from gitsync.notify.notices import Notification
from gitsync.ports import StateStore

__all__ = ["LIMIT", "NOTIFY_PART", "Due", "Outbox"]

Due = tuple[Notification, tuple[str, ...]]
"""A notification and the names of the receivers it is for."""

NOTIFY_PART = "notify"
LIMIT = 100

log = logging.get("gitsync.notify")


class Outbox:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        """The reconcile workers and every receiver's sender write these documents: one at a time in this process,
        so they never race each other into a conflict (another process's write is retried)."""

    def claim(self, key: AppEnv, namespace: str, due: Sequence[Due]) -> tuple[tuple[Due, ...], tuple[Due, ...]]:
        """Add the notices of ``due`` (each with the receivers it is for) that are not here yet. Returns those
        added, and every notice still pending for some receiver (including the new ones)."""
        added: list[Due] = []
        pending: list[Due] = []

        def edit(data: Json) -> Json | None:
            added.clear()
            pending.clear()
            entries = list(data.get("notices", []))
            known = {str(e.get("key")) for e in entries}
            for n, receivers in due:
                if n.key not in known and receivers:
                    entries.append({**n.to_json(), "pending": list(receivers)})
                    known.add(n.key)
                    added.append((n, receivers))
            for entry in entries:
                names = tuple(str(p) for p in entry.get("pending", []))
                if names:
                    try:
                        pending.append((Notification.from_json(entry), names))
                    except (KeyError, ValueError):
                        log.warning("notify.unreadable_entry", app=key.app, env=key.env, key=entry.get("key"))
            return {"notices": entries[-LIMIT:]} if added else None

        self._update(key, namespace, edit)
        return tuple(added), tuple(pending)

    def delivered(self, key: AppEnv, namespace: str, notice_key: str, receiver: str) -> None:
        """``receiver`` is done with the notice (delivered, or given up on): never send it again."""

        def edit(data: Json) -> Json | None:
            entries = list(data.get("notices", []))
            for index, entry in enumerate(entries):
                if entry.get("key") == notice_key and receiver in entry.get("pending", []):
                    entries[index] = {**entry, "pending": [p for p in entry["pending"] if p != receiver]}
                    return {"notices": entries}
            return None

        self._update(key, namespace, edit)

    def _update(self, key: AppEnv, namespace: str, edit: Callable[[Json], Json | None]) -> None:
        """Read, ``edit`` (None: nothing to change, nothing written) and save; retried on a concurrent write."""
        with self._lock:
            for attempt in range(3):
                data, version = self._store.load(key, namespace, NOTIFY_PART)
                changed = edit(data)
                if changed is None:
                    return
                try:
                    self._store.save(key, namespace, NOTIFY_PART, changed, version)
                    return
                except TransientError:
                    if attempt == 2:
                        raise
