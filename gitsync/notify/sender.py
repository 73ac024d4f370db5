"""Delivery of notifications: one background thread per agent with a bounded queue, so a receiver that is down,
slow or never answers delays only other notifications, never a reconcile.

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
from gitsync.notify.outbox import Outbox
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
        self._receivers = tuple(receivers)
        self._poster = poster
        self._outbox = outbox
        self._clock = clock
        self._policy = policy or Policy()
        self._rng = rng or random.Random()
        self._queue: queue.Queue[Delivery | None] = queue.Queue(self._policy.queue_size)
        self._resumed: set[AppEnv] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop sending; whatever is still queued stays pending in the outbox for the next process."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # a full queue: the thread sees the stop flag after its delivery
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def record(self, key: AppEnv, namespace: str, notifications: Sequence[Notification]) -> None:
        """Remember and queue ``notifications`` of ``key``; never waits for a receiver."""
        due = [(n, tuple(r.name for r in self._receivers if r.wants(n))) for n in notifications]
        due = [(n, names) for n, names in due if names]
        with self._lock:
            first = key not in self._resumed
            self._resumed.add(key)
        if not due and not first:
            return
        if self._outbox is None:
            self._queue_all(key, due)
            return
        try:
            added, pending = self._outbox.claim(key, namespace, due)
        except GitsyncError as e:
            # Sent without the outbox's memory: a repeat after a restart is then possible, a loss is not.
            log.warning("notify.outbox_failed", app=key.app, env=key.env, error=str(e))
            with self._lock:
                self._resumed.discard(key)
            self._queue_all(key, due)
            return
        fresh = {n.key for n, _ in added}
        # The first time: what an earlier process left pending, besides what this reconcile added.
        self._queue_all(key, [(n, names) for n, names in pending if first or n.key in fresh])

    def _queue_all(self, key: AppEnv, due: Sequence[tuple[Notification, tuple[str, ...]]]) -> None:
        by_name = {r.name: r for r in self._receivers}
        for n, names in due:
            for name in names:
                receiver = by_name.get(name)
                if receiver is None:
                    continue  # removed from agent.yaml since
                try:
                    self._queue.put_nowait(Delivery(key, n, receiver))
                    log.debug("notify.queued", receiver=name, notice=n.notice.value, key=n.key)
                except queue.Full:
                    log.warning("notify.dropped", receiver=name, notice=n.notice.value, key=n.key, reason="queue full")

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                return
            done = self._deliver(item)
            n = item.notification
            if done and self._outbox is not None:
                try:
                    self._outbox.delivered(item.key, n.namespace, n.key, item.receiver.name)
                except GitsyncError as e:
                    log.warning("notify.outbox_failed", app=item.key.app, env=item.key.env, error=str(e))

    def _deliver(self, d: Delivery) -> bool:
        """Send one delivery with retries; True when it is done (delivered or refused), False when stopped."""
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
