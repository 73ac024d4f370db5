"""The values of a change plan: what merging ``base..head`` does to each app of each environment. Pure data.

Frozen, tuples only, every text already scrubbed of Secret values: a ``ChangePlan`` may be printed, posted as a
pull-request comment or serialised as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AppPlan", "Change", "ChangePlan", "ObjectDiff", "Rollout"]


class Change(StrEnum):
    """What happens to one object. Values are the JSON format."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class Rollout(StrEnum):
    """How the new release replaces the old one when the change is applied. Values are the JSON format."""

    NONE = "none"
    """No workload's pod template changes: the objects are applied in place, no rollout runs."""
    FIRST = "first deployment"
    """The rollout's workload is new: deployed directly, with no analysis (nothing to compare with)."""
    ROLLING = "rolling"
    CANARY = "canary"
    BLUE_GREEN = "blueGreen"


@dataclass(frozen=True, slots=True)
class ObjectDiff:
    """One object's change: ``diff`` is a unified diff of the two sides (YAML), Secret values masked."""

    id: str
    """``gitsync.model.ObjectId`` in its one text form (``Deployment.apps/shop/web``)."""
    change: Change
    diff: str


@dataclass(frozen=True, slots=True)
class AppPlan:
    """One app in one environment, as the change affects it.

    ``objects`` is what changes there when the change is merged (``base`` render -> ``head`` render).
    ``pending`` is what waits for promotion: in an environment with ``promotion:``, a chart or promoted value
    changed by this change reaches it only when its pin moves, so it is listed here, not in ``objects``
    (``promotion_from`` names the environment it must pass first). ``live`` (``gitsync plan --live``) is the
    ``head`` render compared with the cluster by server-side dry-run, None when not asked for.
    """

    env: str
    app: str
    objects: tuple[ObjectDiff, ...] = ()
    images: tuple[tuple[str, str], ...] = ()
    """(before, after) per changed container image; "" for none."""
    rollout: Rollout = Rollout.NONE
    pending: tuple[ObjectDiff, ...] = ()
    promotion_from: str = ""
    pending_rollout: Rollout = Rollout.NONE
    """The rollout the promotion will start in this environment (its own strategy)."""
    live: tuple[ObjectDiff, ...] | None = None
    note: str = ""
    """Something a reviewer should know that is not an error (an app awaiting its first promotion)."""
    error: str = ""
    """Why this app cannot be planned (a render error at ``head``, a dry-run the server refused): one line. With
    ``app`` empty, the environment's env.yaml is what failed."""

    @property
    def key(self) -> str:
        """``app@env``, as everywhere else in gitsync; the environment alone for an error of its env.yaml."""
        return f"{self.app}@{self.env}" if self.app else self.env

    def count(self, change: Change) -> int:
        return sum(1 for o in self.objects if o.change is change)

    @property
    def waits_for_promotion(self) -> bool:
        return bool(self.pending)

    @property
    def has_changes(self) -> bool:
        return bool(self.objects or self.pending or self.live)


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """Every app-env the change touches (``apps``, upstream environments first), and those it leaves alone."""

    base: str
    head: str
    apps: tuple[AppPlan, ...] = ()
    unchanged: tuple[str, ...] = ()
    """``app@env`` of every app rendered at both commits with nothing to show."""

    @property
    def has_changes(self) -> bool:
        return any(a.has_changes for a in self.apps)

    @property
    def errors(self) -> tuple[AppPlan, ...]:
        return tuple(a for a in self.apps if a.error)
