"""``ports.Clock`` on the system wall clock: the one place that reads the time of day."""

from __future__ import annotations

import time

__all__ = ["SystemClock"]


class SystemClock:
    def now(self) -> float:
        return time.time()
