"""Weight -> replica math for a canary without a service mesh: traffic share is the share of Ready pods.

Contract: pure. Rounding: the canary gets ``ceil(total * weight / 100)`` pods, at least 1 for any weight above 0,
so a small weight is never silently 0%; the stable keeps ``total - canary`` pods, and at least 1 while the weight is
below 100 so some traffic always stays on the known-good version. When that cannot express the weight exactly,
``Split.warning`` says what is realised instead (2 replicas at 10% -> 1 canary + 1 stable = 50%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Split", "split"]


@dataclass(frozen=True, slots=True)
class Split:
    canary: int
    stable: int
    requested: int

    @property
    def realised(self) -> int:
        """The traffic share the canary actually gets, percent (rounded)."""
        pods = self.canary + self.stable
        return round(100 * self.canary / pods) if pods else 0

    @property
    def warning(self) -> str:
        if self.realised == self.requested:
            return ""
        return (
            f"weight {self.requested}% realised as {self.canary} canary + {self.stable} stable pods = "
            f"{self.realised}% (too few replicas to honour it exactly)"
        )


def split(total: int, weight: int) -> Split:
    total = max(total, 1)
    weight = min(max(weight, 0), 100)
    canary = 0 if weight == 0 else min(total, max(1, math.ceil(total * weight / 100)))
    stable = total - canary
    if weight < 100:
        stable = max(stable, 1)
    return Split(canary, stable, weight)
