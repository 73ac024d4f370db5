"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it.

Two or more replicas run; the one holding the Lease reconciles, the others keep serving ``/healthz``,
``/readyz`` and webhooks (which they verify and enqueue, so a new leader starts with the triggers it saw) but
never act. Timing (defaults, see ``LeaderElection``): the holder renews every ``renew_interval``; a candidate
takes the Lease when it has seen no renewal for ``lease_duration`` (measured on its own clock from when it
last saw the record change, so clock skew between nodes does not matter); a leader that could not renew for
``renew_deadline`` (2/3 of the lease) steps down before anyone else may take over. A clean shutdown releases
the Lease, so the follower takes over at its next try instead of after a full lease duration.

Writes are optimistic (PUT with the resourceVersion read), so two candidates racing for an expired Lease
cannot both win.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from gitsync import log as logging
from gitsync.errors import GitsyncError
from gitsync.model import Json, ObjectId
from gitsync.ports import Clock
from gitsync.runtime.config import LeaderElection

__all__ = ["LeaderElector", "LeaseBackend"]

log = logging.get("gitsync.leader")


class LeaseBackend(Protocol):
    """The three calls election needs (``gitsync.adapters.kube.KubeCluster`` provides them)."""

    def get(self, ref: ObjectId) -> Json | None: ...
    def create(self, body: Json) -> Json: ...
    def replace(self, body: Json) -> Json: ...


def _micro_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        backend: LeaseBackend,
        config: LeaderElection,
        clock: Clock,
        on_change: Callable[[bool], None] | None = None,
        *,
        topic: str = "leader",
    ) -> None:
        """``topic``: the prefix of its log events (``leader.elected``; a shard Lease's are ``shard.*``)."""
        self._backend = backend
        self._topic = topic
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._ref = ObjectId("coordination.k8s.io", "Lease", config.namespace, config.lease_name)
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._expires_at: float | None = None
        self._renewed_at = 0.0
        self._annotations: dict[str, str] = {}
        self._round = threading.Lock()
        """One round at a time: the Lease thread's and an ``annotate`` from a request thread."""
        self._thread: threading.Thread | None = None
        self.holder = ""

    @property
    def identity(self) -> str:
        return self._config.identity

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    @property
    def expires_at(self) -> float | None:
        """When the Lease, last seen held by another replica, expires on this replica's clock (it was not renewed
        since it was first seen so); None when it is this replica's, free, or not seen yet."""
        return self._expires_at

    def wait_leading(self, timeout: float) -> bool:
        return self._leading.wait(timeout)

    # -- one round ---------------------------------------------------------------------------------------------

    def annotate(self, key: str, value: str) -> None:
        """Carry ``key: value`` in the Lease's annotations from now on, written at once by a renewal (how a
        replica tells the others something through the Lease they watch: ``gitsync.runtime.shards``)."""
        with self._round:
            self._annotations[key] = value
            self._try_acquire_or_renew(True)

    def try_acquire_or_renew(self, *, acquire: bool = True) -> bool:
        """One election round; True when this replica holds the Lease afterwards. ``acquire`` False only observes
        a Lease held by another (and renews one held by this replica), so the expiry clock keeps running for a
        Lease this replica may want later (``gitsync.runtime.shards``)."""
        with self._round:
            return self._try_acquire_or_renew(acquire)

    def _try_acquire_or_renew(self, acquire: bool) -> bool:
        now = self._clock.now()
        try:
            lease = self._backend.get(self._ref)
            if lease is None:
                if not acquire:
                    return self._lost()
                self._backend.create(self._body(None, now, transitions=0))
                return self._won(now)
            spec = lease.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            record = (holder, str(spec.get("renewTime") or ""))
            if record != self._observed:
                self._observed, self._observed_at = record, now
            self.holder = holder
            duration = float(spec.get("leaseDurationSeconds") or self._config.lease_duration)
            held_by_another = bool(holder) and holder != self.identity
            self._expires_at = self._observed_at + duration if held_by_another else None
            if held_by_another and now < self._observed_at + duration:
                return self._lost()
            if not acquire and holder != self.identity:
                return self._lost()
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            acquired = str(spec.get("acquireTime") or "") if holder == self.identity else ""
            self._backend.replace(self._body(lease, now, transitions, acquired))
            return self._won(now)
        except GitsyncError as e:
            # A lost race (StaleError) or an unreachable API server: keep leading only within the renew deadline.
            if self.is_leader and now - self._renewed_at < self._config.lease_duration * 2 / 3:
                log.warning(f"{self._topic}.renew_failed", identity=self.identity, error=str(e))
                return True
            if self.is_leader:
                log.error(f"{self._topic}.renew_deadline_passed", identity=self.identity, error=str(e))
            return self._lost()

    def _body(self, lease: Json | None, now: float, transitions: int, acquired: str = "") -> Json:
        metadata: Json = {"name": self._ref.name, "namespace": self._ref.namespace}
        if self._annotations:
            metadata["annotations"] = dict(self._annotations)
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self._config.lease_duration)),
                "acquireTime": acquired or _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    def _won(self, now: float) -> bool:
        self._renewed_at = now
        self.holder = self.identity
        if not self._leading.is_set():
            self._leading.set()
            log.info(f"{self._topic}.elected", identity=self.identity, lease=str(self._ref))
            if self._on_change:
                self._on_change(True)
        return True

    def _lost(self) -> bool:
        if self._leading.is_set():
            self._leading.clear()
            log.warning(f"{self._topic}.lost", identity=self.identity, holder=self.holder, lease=str(self._ref))
            if self._on_change:
                self._on_change(False)
        return False

    def release(self) -> None:
        """Give the Lease up (clean shutdown) so a follower takes over at its next round."""
        if not self._leading.is_set():
            return
        self._leading.clear()
        try:
            lease = self._backend.get(self._ref)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                body = self._body(lease, self._clock.now(), int(lease["spec"].get("leaseTransitions") or 0))
                body["spec"]["holderIdentity"] = ""
                body["spec"]["leaseDurationSeconds"] = 1
                self._backend.replace(body)
                log.info(f"{self._topic}.released", identity=self.identity, lease=str(self._ref))
        except GitsyncError as e:
            log.warning(f"{self._topic}.release_failed", identity=self.identity, error=str(e))
        if self._on_change:
            self._on_change(False)

    # -- the loop ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self._config.renew_interval if self.is_leader else self._config.renew_interval / 2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.release()
