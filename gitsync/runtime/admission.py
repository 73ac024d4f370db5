"""What the HTTP server admits, so that no client can take it over: connections per client, webhook requests per
sender, and each webhook delivery once. Pure and thread-safe; the caller passes the time (``time.monotonic()``).

Every table is bounded (``MAX_TRACKED`` keys, the least recently used dropped first), so a flood of addresses or
delivery ids costs a fixed amount of memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_TRACKED = 10_000
"""Most clients, senders or delivery ids each table remembers."""


class ConnectionSlots:
    """At most ``per_client`` connections from one address and ``total`` in all; ``acquire`` says whether a new
    connection may be served (the caller closes it at once otherwise) and ``release`` gives its slot back."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    def acquire(self, client: str) -> bool:
        with self._lock:
            held = self._open.get(client, 0)
            if self._count >= self.total or held >= self.per_client:
                return False
            self._open[client] = held + 1
            self._count += 1
            return True

    def release(self, client: str) -> None:
        with self._lock:
            held = self._open.get(client, 0) - 1
            if held > 0:
                self._open[client] = held
            else:
                self._open.pop(client, None)
            self._count -= 1


class RateLimiter:
    """A token bucket per sender: ``burst`` requests at once, then ``per_second``."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # sender -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, sender: str, now: float) -> bool:
        with self._lock:
            tokens, at = self._buckets.pop(sender, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            allowed = tokens >= 1.0
            self._buckets[sender] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
            return allowed


class SeenDeliveries:
    """Delivery ids already accepted, so that a replayed (or redelivered) signed webhook is handled once."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        """True the first time ``delivery_id`` is offered (and remembers it); an empty id is always new."""
        if not delivery_id:
            return True
        with self._lock:
            if delivery_id in self._seen:
                self._seen.move_to_end(delivery_id)
                return False
            self._seen[delivery_id] = None
            if len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)
            return True
