"""A bounded background queue for forge calls that must never hold up a reconcile (commit statuses, pull
requests, plan comments).

Contract: ``put`` never blocks and never raises. Calls are keyed; a call put while another with the same key
still waits replaces it (the newest status of a commit and context is the only one worth sending). When
``capacity`` keys wait, the oldest is dropped (logged): an unreachable forge costs memory bounded by the
capacity, and reconciles carry on. One daemon thread runs the calls in order; a call that raises is logged, and
when the failure is transient ``on_failure`` is told its key (so a sink can forget what it believed was sent and
send it again next time). A refused call (a 4xx: a token without the scope) is not repeated by every reconcile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from gitsync import log as logging
from gitsync.errors import GitsyncError, TransientError

__all__ = ["ForgeQueue"]

log = logging.get("gitsync.forge")


class ForgeQueue:
    def __init__(self, name: str, capacity: int = 256, on_failure: Callable[[str], None] | None = None) -> None:
        self.name = name
        self._capacity = capacity
        self._on_failure = on_failure or (lambda _key: None)
        self._waiting: OrderedDict[str, Callable[[], None]] = OrderedDict()
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
            self._waiting[key] = call
            if len(self._waiting) > self._capacity:
                dropped, _ = self._waiting.popitem(last=False)
                log.warning("forge.dropped", queue=self.name, key=dropped, capacity=self._capacity)
                self._on_failure(dropped)
            self._cond.notify_all()

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

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._closed)
                if self._closed and not self._waiting:
                    return
                key, call = self._waiting.popitem(last=False)
                self._busy = True
            try:
                call()
            except TransientError as e:
                log.warning("forge.failed", queue=self.name, key=key, error=str(e))
                self._on_failure(key)
            except GitsyncError as e:
                # Refused (a token without the scope, no access): the same call again would be refused the same
                # way, so the next reconcile does not repeat it; the next different call is tried.
                log.warning("forge.failed", queue=self.name, key=key, error=str(e), terminal=True)
            except Exception as e:  # noqa: BLE001 - a bug in one call must not stop every later one
                log.error("forge.crashed", queue=self.name, key=key, error=repr(e))
                self._on_failure(key)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
