"""The values ``decide`` reads and returns: the tracks, the actions, what the executor observed, the decision.

Contract: pure values, no I/O. Every action is idempotent (apply a template at a replica count, scale, delete,
point a Service at a track), so the executor may repeat a step after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from gitsync.analysis.pod_health import PodReport
from gitsync.analysis.run import Measurement
from gitsync.events import EventType, Reason
from gitsync.strategy.policy import RolloutPolicy, Strategy
from gitsync.strategy.state import Command, RolloutState

__all__ = [
    "POLL",
    "TRACKS_OF",
    "WATCH",
    "Action",
    "BlueGreenStep",
    "Clone",
    "Decision",
    "Deploy",
    "Emit",
    "Fold",
    "FoldStage",
    "Observation",
    "Remove",
    "Route",
    "Scale",
    "ServiceRole",
    "Track",
    "WorkloadView",
    "tracks",
]

POLL = 1.0
"""Seconds between looks while waiting for pods to become Ready or be replaced, when nothing watches them (the CLI
driving a step); the agent's watch wakes the app-env as soon as they change (``Decision.on_change``)."""
WATCH = 5.0
"""Longest wait between looks while a rollout is active, so the pod gate sees a crash during a long pause."""


class Track(StrEnum):
    """A workload the executor manages: the stable Deployment, the canary, or a blue-green colour."""

    STABLE = "stable"
    CANARY = "canary"
    BLUE = "blue"
    GREEN = "green"


TRACKS_OF = {
    Strategy.ROLLING: (),
    Strategy.CANARY: (Track.CANARY,),
    Strategy.BLUE_GREEN: (Track.BLUE, Track.GREEN),
}
"""The tracks beside the stable Deployment that each strategy runs."""


class ServiceRole(StrEnum):
    ACTIVE = "active"
    PREVIEW = "preview"


class BlueGreenStep(IntEnum):
    """Blue-green progress as step numbers, so status shows one ``step`` for both strategies; ``str`` of a
    member is its name in status messages."""

    PREVIEW = 0
    PRE_ANALYSIS = 1
    GATE = 2
    POST_ANALYSIS = 3
    SCALE_DOWN = 4

    def __str__(self) -> str:
        return ("preview", "prePromotionAnalysis", "promotion", "postPromotionAnalysis", "scaleDownDelay")[self]


@dataclass(frozen=True, slots=True)
class Deploy:
    """Apply the desired (new) template to ``track`` with ``replicas``."""

    track: Track
    replicas: int


@dataclass(frozen=True, slots=True)
class Scale:
    """Set the replicas of ``track``, keeping whatever template it runs; nothing when it does not exist. ``pause``:
    the stable Deployment's controller is paused too (its hand-over to the canary's pods, ``Fold``); any other
    scale of it resumes it. The canary Deployment stays paused whatever this says."""

    track: Track
    replicas: int
    pause: bool = False


class FoldStage(StrEnum):
    """The canary's pods become the stable Deployment's, without a pod started or stopped (``Fold``)."""

    HOLD = "hold"
    """The paused stable Deployment drops its old (empty) ReplicaSets and takes the canary's template and the
    full replicas: paused and owning no ReplicaSet, its controller does nothing with either."""
    ADOPT = "adopt"
    """The canary's ReplicaSet is handed to the stable Deployment (its controller reference), whose controller
    finds it to be the ReplicaSet of its template at its replicas: nothing to scale."""
    RELEASE = "release"
    """The stable Deployment is resumed (its ReplicaSet is current and saturated: no rollout) and the empty
    canary Deployment deleted."""


@dataclass(frozen=True, slots=True)
class Fold:
    """One stage of promoting a canary by handing its ReplicaSet to the stable Deployment."""

    stage: FoldStage
    replicas: int


@dataclass(frozen=True, slots=True)
class Clone:
    """Copy the stable Deployment as it runs (its template, not the render's) to ``track`` with ``replicas``."""

    track: Track
    replicas: int


@dataclass(frozen=True, slots=True)
class Remove:
    track: Track


@dataclass(frozen=True, slots=True)
class Route:
    """Point a Service's selector at ``track``'s pods."""

    service: ServiceRole
    track: Track


@dataclass(frozen=True, slots=True)
class Emit:
    """A Kubernetes Event (and log line) about the rollout; its type follows from the reason."""

    reason: Reason
    message: str

    @property
    def type(self) -> EventType:
        return self.reason.type


Action = Deploy | Clone | Scale | Remove | Route | Emit | Fold


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """What the executor saw of one track's Deployment."""

    exists: bool = False
    replicas: int = 0
    ready: int = 0
    template_hash: str = ""
    spec_hash: str = ""
    rolled: bool = False
    """The controller observed the latest spec and every replica is updated and Ready, with no old pods left."""
    paused: bool = False
    observed: bool = False
    """The controller has seen the latest spec (``status.observedGeneration``)."""
    pods: int = 0
    """Pods of the Deployment's ReplicaSets, as its controller last counted them (``status.replicas``)."""


@dataclass(frozen=True, slots=True)
class Observation:
    target_hash: str
    """Hash of the rendered pod template: what should run."""
    spec_hash: str
    """Hash of the whole rendered Deployment minus replicas: a change without a template change needs no rollout."""
    total: int
    """Desired replicas from the render."""
    stable: WorkloadView
    new: WorkloadView
    new_pods: PodReport = field(default_factory=PodReport)
    measurements: tuple[Measurement, ...] = ()
    command: Command | None = None
    revision: str = ""
    services_current: bool = True
    """Blue-green: the live Services match the render (ports, labels); False makes a settled rollout re-route."""
    workload: str = ""
    """Name of the rendered Deployment the strategy drives; empty when none is rendered (it left the render)."""


@dataclass(frozen=True, slots=True)
class Decision:
    state: RolloutState
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    on_change: bool = False
    """The step waits for the cluster (pods Ready, replaced, a controller observing a spec): a watch on the
    rollout's Deployments and pods ends the wait, ``requeue_after`` is the look when nothing watches."""


def tracks(state: RolloutState, policy: RolloutPolicy) -> tuple[Track, Track]:
    """(stable track, new track) for the current state: the colours alternate from one rollout to the next."""
    if policy.strategy is Strategy.BLUE_GREEN:
        # Before the first colour exists the stable is the rendered Deployment itself (an app switching to
        # blue-green serves from it until its copy in a colour is Ready).
        stable = Track(state.stable_color) if state.stable_color else Track.STABLE
        return stable, Track.GREEN if stable is Track.BLUE else Track.BLUE
    return Track.STABLE, Track.CANARY
