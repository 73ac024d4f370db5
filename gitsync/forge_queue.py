"""A bounded background queue for calls that must never hold up a reconcile (commit statuses, pull requests, plan
comments, a ledger line the remote did not take).

Contract: ``put`` never blocks and never raises. Calls are keyed; a call put while another with the same key
still waits replaces it (the newest status of a commit and context is the only one worth sending). When
``capacity`` keys wait, the oldest is dropped (logged) and ``on_failure`` is told its key: an unreachable forge
costs memory bounded by the capacity, and reconciles carry on. One daemon thread runs the calls in order.

A call that fails transiently (the forge or the Git remote unreachable, a 5xx) is kept and tried again after a
backoff (``retry_after``, doubling up to ``MAX_RETRY_AFTER``), until it succeeds, a newer call of its key replaces
it, or it is dropped: a forge down for the minute in which a release ended still gets that release's final
status once it is back, although no reconcile follows. A refused call (a 4xx: a token without the scope) is
logged and not repeated. A call that crashes is logged and ``on_failure`` is told its key (so a sink can forget
what it believed was sent and send it again next time).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from gitsync import log as logging
from gitsync.errors import GitsyncError, TransientError

__all__ = ["MAX_RETRY_AFTER", "ForgeQueue"]

log = logging.get("gitsync.forge")

MAX_RETRY_AFTER = 60.0
"""Longest pause between two tries of a call that keeps failing transiently."""


class ForgeQueue:
    def __init__(
        self,
        name: str,
        capacity: int = 256,
        on_failure: Callable[[str], None] | None = None,
        *,
        retry_after: float = 5.0,
    ) -> None:
        self.name = name
        self._capacity = capacity
        self._on_failure = on_failure or (lambda _key: None)
        self._retry_after = retry_after
        self._waiting: OrderedDict[str, Callable[[], None]] = OrderedDict()
        self._due: dict[str, tuple[float, float]] = {}
        """key -> (monotonic time it may run again, the pause before that) for a call that failed transiently."""
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"forge-{name}", daemon=True)
        self._thread.start()

    def put(self, key: str, call: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            self._waiting.pop(key, None)
            self._due.pop(key, None)
            self._add(key, call)

    def idle(self, timeout: float) -> bool:
        """Wait until nothing waits or runs (True), at most ``timeout`` seconds (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._busy, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what waits, for at most ``timeout`` seconds, then stop."""
        self.idle(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)

    def _add(self, key: str, call: Callable[[], None]) -> None:
        """Under the lock: ``call`` waits last; the oldest is dropped beyond the capacity."""
        self._waiting[key] = call
        if len(self._waiting) > self._capacity:
            dropped, _ = self._waiting.popitem(last=False)
            self._due.pop(dropped, None)
            log.warning("forge.dropped", queue=self.name, key=dropped, capacity=self._capacity)
            self._on_failure(dropped)
        self._cond.notify_all()

    def _next(self) -> tuple[str, Callable[[], None], float] | None:
        """Under the lock: wait for the first call that may run now (None: closed and nothing waits)."""
        while True:
            if self._closed and not self._waiting:
                return None
            now = time.monotonic()
            ready = next((key for key in self._waiting if self._due.get(key, (0.0, 0.0))[0] <= now), None)
            if ready is not None:
                _, pause = self._due.pop(ready, (0.0, 0.0))
                return ready, self._waiting.pop(ready), pause
            if self._closed:
                return None
            first = min((self._due[key][0] for key in self._waiting if key in self._due), default=None)
            self._cond.wait(None if first is None else max(first - now, 0.0))

    def _run(self) -> None:
        while True:
            with self._cond:
                taken = self._next()
                if taken is None:
                    return
                key, call, pause = taken
                self._busy = True
            try:
                call()
            except TransientError as e:
                pause = min(max(pause * 2, self._retry_after), MAX_RETRY_AFTER)
                log.warning("forge.failed", queue=self.name, key=key, error=str(e), retry_in=pause)
                with self._cond:
                    if key not in self._waiting and not self._closed:  # not replaced by a newer call meanwhile
                        self._due[key] = (time.monotonic() + pause, pause)
                        self._add(key, call)
            except GitsyncError as e:
                # Refused (a token without the scope, no access): the same call again would be refused the same
                # way, so it is not repeated; the next different call is tried.
                log.warning("forge.failed", queue=self.name, key=key, error=str(e), terminal=True)
            except Exception as e:  # noqa: BLE001 - a bug in one call must not stop every later one
                log.error("forge.crashed", queue=self.name, key=key, error=repr(e))
                self._on_failure(key)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
