"""Delivery of notifications: one background thread per receiver, each with a bounded queue, so a receiver that
is down, slow or never answers delays only its own notifications, never a reconcile nor another receiver.

``Notifier.record`` is what the record stage calls (on the reconcile's thread): it writes the notices to the
app-env's outbox in the cluster (``gitsync.notify.outbox``) and queues them without waiting. The first call for an
app-env in this process also queues what an earlier process left pending there (killed before it could send).

Each delivery is attempted up to ``attempts`` times: a connection error, a timeout, 408, 429 or 5xx is retried after
an exponential backoff with jitter, or after the receiver's ``Retry-After`` (capped at ``max_delay``); any other
answer ends it (2xx: delivered; 4xx: refused, logged). Either way it is marked done in the outbox. The URL and
key files are read at each delivery; their contents never reach a log line, a body or an error.
"""

from __future__ import annotations

import contextlib
import email.utils
import queue
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitsync import log as logging
from gitsync.errors import GitsyncError
from gitsync.model import AppEnv
from gitsync.notify.formats import Format, Receiver, request
from gitsync.notify.notices import Notification
from gitsync.notify.outbox import Due, Outbox
from gitsync.ports import Clock, WebhookPoster

__all__ = ["Delivery", "Notifier", "Policy", "retry_after"]

log = logging.get("gitsync.notify")


@dataclass(frozen=True, slots=True)
class Delivery:
    key: AppEnv
    notification: Notification
    receiver: Receiver


@dataclass(frozen=True, slots=True)
class Policy:
    """How hard one delivery is tried. The defaults give up after about two minutes of a receiver being down
    (1 + 2 + 4 + 8 + 16 + 32 s of backoff, plus up to 10 s of each attempt)."""

    attempts: int = 7
    backoff: float = 1.0
    max_delay: float = 60.0
    """The longest wait between attempts, whatever a ``Retry-After`` asks for."""
    timeout: float = 10.0
    queue_size: int = 1000


class Notifier:
    def __init__(
        self,
        receivers: Sequence[Receiver],
        poster: WebhookPoster,
        outbox: Outbox | None,
        clock: Clock,
        policy: Policy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``outbox`` None: nothing is remembered across restarts (tests of delivery alone)."""
        self._outbox = outbox
        self._stopping = threading.Event()
        policy = policy or Policy()
        send = _Sender(poster, clock, policy, rng or random.Random(), self._stopping)
        self._lanes = {r.name: _Lane(r, send, outbox, self._stopping, policy.queue_size) for r in receivers}
        self._resumed: set[AppEnv] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        for lane in self._lanes.values():
            lane.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop sending; whatever is still queued stays pending in the outbox for the next process."""
        self._stopping.set()
        for lane in self._lanes.values():
            lane.stop(timeout)

    def record(self, key: AppEnv, namespace: str, notifications: Sequence[Notification]) -> None:
        """Remember and queue ``notifications`` of ``key``; never waits for a receiver."""
        due = [(n, tuple(name for name, lane in self._lanes.items() if lane.receiver.wants(n))) for n in notifications]
        due = [(n, names) for n, names in due if names]
        with self._lock:
            first = key not in self._resumed
            self._resumed.add(key)
        if not due and not first:
            return
        if self._outbox is None:
            self._queue(key, due)
            return
        try:
            added, pending = self._outbox.claim(key, namespace, due)
        except GitsyncError as e:
            # Sent without the outbox's memory: a repeat after a restart is then possible, a loss is not.
            log.warning("notify.outbox_failed", app=key.app, env=key.env, error=str(e))
            with self._lock:
                self._resumed.discard(key)
            self._queue(key, due)
            return
        fresh = {n.key for n, _ in added}
        # The first time: what an earlier process left pending, besides what this reconcile added.
        self._queue(key, [(n, names) for n, names in pending if first or n.key in fresh])

    def _queue(self, key: AppEnv, due: Sequence[Due]) -> None:
        for n, names in due:
            for name in names:
                lane = self._lanes.get(name)
                if lane is not None:  # None: removed from agent.yaml since it was written to the outbox
                    lane.put(key, n)


class _Lane:
    """One receiver's queue and thread: a receiver that hangs delays only its own notifications."""

    def __init__(
        self, receiver: Receiver, send: _Sender, outbox: Outbox | None, stopping: threading.Event, size: int
    ) -> None:
        self.receiver = receiver
        self._send = send
        self._outbox = outbox
        self._stopping = stopping
        self._queue: queue.Queue[Delivery | None] = queue.Queue(size)
        self._thread = threading.Thread(target=self._run, name=f"notify-{receiver.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(queue.Full):  # a full queue: the thread sees the stop flag after its delivery
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def put(self, key: AppEnv, n: Notification) -> None:
        fields = {"receiver": self.receiver.name, "notice": n.notice.value, "key": n.key}
        try:
            self._queue.put_nowait(Delivery(key, n, self.receiver))
        except queue.Full:
            log.warning("notify.dropped", **fields, reason="queue full; stays pending in the outbox")

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None or not self._send(item):
                return
            n = item.notification
            if self._outbox is not None:
                try:
                    self._outbox.delivered(item.key, n.namespace, n.key, self.receiver.name)
                except GitsyncError as e:
                    log.warning("notify.outbox_failed", app=n.app, env=n.env, error=str(e))


class _Sender:
    """One delivery with its retries."""

    def __init__(
        self, poster: WebhookPoster, clock: Clock, policy: Policy, rng: random.Random, stopping: threading.Event
    ) -> None:
        self._poster = poster
        self._clock = clock
        self._policy = policy
        self._rng = rng
        self._stopping = stopping

    def __call__(self, d: Delivery) -> bool:
        """True when the delivery is done (delivered, refused or given up on), False when stopped."""
        n, receiver = d.notification, d.receiver
        fields = {"receiver": receiver.name, "notice": n.notice.value, "app": n.app, "env": n.env, "key": n.key}
        try:
            url = _read(receiver.url_file).decode().strip() if receiver.url_file is not None else receiver.url
            secret = _read(receiver.secret_file) if receiver.secret_file is not None else b""
        except OSError as e:
            log.error("notify.failed", **fields, error=f"cannot read a file of the receiver: {e.strerror}")
            return True
        if not url.startswith(("http://", "https://")):
            log.error("notify.failed", **fields, error="the URL (urlFile) is not http(s)")
            return True
        if receiver.format is Format.GENERIC and not secret:
            log.error("notify.failed", **fields, error="the signing key (secretFile) is empty")
            return True
        body, headers = request(receiver, n, secret)
        policy = self._policy
        for attempt in range(1, policy.attempts + 1):
            wait: float | None = None
            try:
                status, retry = self._poster.post(url, body, headers, policy.timeout)
            except GitsyncError as e:
                problem = str(e)
            else:
                if 200 <= status < 300:
                    log.info("notify.sent", **fields, status=status, attempts=attempt)
                    return True
                if status not in (408, 429) and status < 500:
                    log.error("notify.refused", **fields, status=status, attempts=attempt)
                    return True
                problem, wait = f"HTTP {status}", retry_after(retry, self._clock.now())
            if attempt == policy.attempts:
                log.error("notify.failed", **fields, error=problem, attempts=attempt)
                return True
            ceiling = min(policy.max_delay, policy.backoff * 2.0 ** (attempt - 1))
            delay = min(policy.max_delay, wait) if wait is not None else ceiling * (0.5 + self._rng.random() / 2)
            log.warning("notify.retry", **fields, error=problem, attempt=attempt, delay=round(delay, 3))
            if self._stopping.wait(delay):
                return False
        return True


def _read(path: Path) -> bytes:
    return path.read_bytes().strip()


def retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
