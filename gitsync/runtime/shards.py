"""Sharding: the app-envs spread over the agent's replicas by ``coordination.k8s.io/v1`` Leases.

With ``sharding: {shards: N}`` every replica works, each on the app-envs of the shards it holds:

- an app-env belongs to shard ``sha256("app@env") mod N`` (``shard_of``): stable over restarts, replicas and
  Python versions, so every replica computes the same map without talking to the others;
- shard ``i`` is the Lease ``<leaseName>-shard-<i>``, held and renewed by one replica through a
  ``LeaderElector`` (same timing and the same optimistic writes as leader election, so two replicas racing for
  an expired shard cannot both win);
- each replica also renews its member Lease ``<leaseName>-member-<identity>``, so the others count the live
  replicas; a replica holds at most its fair share ``ceil(N / live replicas)`` of shards: below it, it takes shards
  that are free or expired; above it (a replica joined), it hands one back once the reconciles of that shard in
  flight have finished. Since the fair shares add up to at least N, every shard always has a taker;
- a replica that dies stops renewing: its member and shard Leases expire ``leaseDuration`` after their last
  renewal (measured on each observer's own clock, as in ``leader``), and the survivors, whose fair share grew, take
  its shards as those expire (each replica times its next round for the soonest expiry it has seen): within
  ``leaseDuration`` plus one round (the lag with which the last renewal was first seen);
- an app-env is reconciled only while its replica holds its shard (``claim``); a replica that cannot renew stops
  claiming at 2/3 of ``leaseDuration`` (the elector's renew deadline), before anyone else may take the shard. A
  reconcile already in flight then finishes, as one of a leader that lost its Lease does (state writes are
  optimistic, so it cannot overwrite a newer record silently).

Writes to Git stay exactly-once because they belong to one app-env's reconcile (its promotion, its ledger line),
and that app-env has one holder at a time; ``gitsync.promotion`` rebuilds a commit that lost a push race.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Protocol

from gitsync import log as logging
from gitsync.cache import Change, WatchCache
from gitsync.errors import GitsyncError
from gitsync.model import AppEnv, ObjectId
from gitsync.ports import Clock, ObjectList, WatchEventType
from gitsync.runtime.config import LeaderElection
from gitsync.runtime.leader import LeaderElector, LeaseBackend

__all__ = ["ShardBackend", "ShardSet", "member_lease", "shard_of"]

log = logging.get("gitsync.shards")

_FORGET_AFTER = 10
"""A member Lease not renewed for this many lease durations is deleted (a replica that went away for good)."""
PUSHED = "gitsync.dev/pushed"
"""Member Lease annotation: the last push a webhook told this replica of (a commit, or ``now@<time>``)."""
_EXPIRY_MARGIN = 0.05
"""Seconds past a Lease's expiry (own clock) at which the round that takes it runs."""


def shard_of(key: AppEnv, shards: int) -> int:
    """The shard of ``key``: a hash of its one string form, not Python's ``hash`` (salted per process)."""
    digest = hashlib.sha256(str(key).encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def member_lease(config: LeaderElection) -> str:
    """The member Lease of this replica: the identity made a valid object name (lower case, ``-``), with a hash of
    the identity when that changed it, so two identities never share a Lease."""
    safe = re.sub(r"[^a-z0-9-]+", "-", config.identity.lower()).strip("-")[:40] or "replica"
    if safe != config.identity:
        safe = f"{safe}-{hashlib.sha256(config.identity.encode()).hexdigest()[:8]}"
    return f"{config.lease_name}-member-{safe}"


class ShardBackend(LeaseBackend, Protocol):
    """Election's calls plus list and delete, to count the live members and forget the gone ones."""

    def list(
        self, group: str, kind: str, namespace: str = "", label_selector: str = "", *, metadata_only: bool = False
    ) -> ObjectList: ...

    def delete(self, ref: ObjectId, *, propagation: str = "Background") -> bool: ...


class ShardSet:
    """This replica's shards: which it holds, the Lease rounds that keep them, and the claims of its workers."""

    def __init__(
        self,
        backend: ShardBackend,
        config: LeaderElection,
        shards: int,
        clock: Clock,
        on_change: Callable[[int, bool], None] | None = None,
    ) -> None:
        """``on_change(shard, held)`` is called from the Lease thread when a shard is gained or lost."""
        self.shards = shards
        self._backend = backend
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._electors = [
            LeaderElector(
                backend,
                replace(config, lease_name=f"{config.lease_name}-shard-{i}"),
                clock,
                on_change=partial(self._changed, i),
                topic="shard",
            )
            for i in range(shards)
        ]
        self._member = LeaderElector(backend, replace(config, lease_name=member_lease(config)), clock, topic="member")
        self._prefix = f"{config.lease_name}-member-"
        self._seen: dict[str, tuple[tuple[str, str], float]] = {}
        """Member Lease name -> (holder, renewTime) last seen and when it was first seen so (own clock)."""
        self.members = 1
        self._cond = threading.Condition()
        self._inflight: Counter[int] = Counter()
        self._draining: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return self._config.identity

    def held(self) -> frozenset[int]:
        return frozenset(i for i, elector in enumerate(self._electors) if elector.is_leader)

    def shard_of(self, key: AppEnv) -> int:
        return shard_of(key, self.shards)

    def owns(self, key: AppEnv) -> bool:
        """Whether this replica may start a reconcile of ``key`` now."""
        shard = self.shard_of(key)
        with self._cond:
            return self._electors[shard].is_leader and shard not in self._draining

    @contextmanager
    def claim(self, key: AppEnv) -> Iterator[bool]:
        """Yield True, holding the shard of ``key`` until the block ends (it is not handed back meanwhile), or
        False when this replica does not hold it: the worker then leaves ``key`` to its holder."""
        shard = self.shard_of(key)
        with self._cond:
            owned = self._electors[shard].is_leader and shard not in self._draining
            if owned:
                self._inflight[shard] += 1
        try:
            yield owned
        finally:
            if owned:
                with self._cond:
                    self._inflight[shard] -= 1
                    self._cond.notify_all()

    # -- webhooks reach one replica: it tells the others through its member Lease ------------------------------

    def announce(self, revision: str) -> None:
        """Tell the other replicas a webhook arrived (a Service delivers it to one of them): ``revision`` goes
        into this replica's member Lease, which every replica watches (``watch_announcements``)."""
        token = revision or f"now@{self._clock.now():.3f}"
        try:
            self._member.annotate(PUSHED, token)
        except GitsyncError as e:  # the others still see the commit at their next poll
            log.warning("shard.announce_failed", identity=self.identity, error=str(e))

    def watch_announcements(self, cache: WatchCache, on_announced: Callable[[str], None]) -> None:
        """Call ``on_announced(revision)`` when another replica's member Lease carries a new push (not for what
        a Lease already said when first seen: that push was handled when it came)."""
        seen: dict[str, str] = {}
        lock = threading.Lock()

        def changed(change: Change) -> None:
            ref = change.id
            if ref.kind != "Lease" or ref.namespace != self._config.namespace or not ref.name.startswith(self._prefix):
                return
            if ref.name == member_lease(self._config) or change.type is WatchEventType.DELETED:
                return
            pushed = str(((change.object.get("metadata") or {}).get("annotations") or {}).get(PUSHED) or "")
            with lock:
                first, before = ref.name not in seen, seen.get(ref.name, "")
                seen[ref.name] = pushed
            if pushed and not first and pushed != before:
                log.info("shard.push_announced", identity=self.identity, by=ref.name, revision=pushed)
                on_announced(pushed)

        cache.subscribe(changed)
        cache.ensure("coordination.k8s.io", "Lease", self._config.namespace, all_objects=True)

    # -- one round ---------------------------------------------------------------------------------------------

    def round(self) -> None:
        """Renew the member Lease and the held shards, count the live members, take shards up to the fair share
        and hand back what is above it."""
        self._member.try_acquire_or_renew()
        try:
            self.members = self._count_members()
        except GitsyncError as e:  # keep the last count; the shard rounds below still renew what is held
            log.warning("shard.members_unlisted", identity=self.identity, error=str(e))
        fair = math.ceil(self.shards / self.members)
        held = len(self.held())
        for elector in self._electors:
            if elector.is_leader:
                elector.try_acquire_or_renew()
            elif elector.try_acquire_or_renew(acquire=held < fair):
                held += 1
        self._hand_back(fair)

    def _count_members(self) -> int:
        """Live replicas: member Leases renewed within their duration (own clock), this replica included."""
        now = self._clock.now()
        listed = self._backend.list("coordination.k8s.io", "Lease", self._config.namespace).items
        live = {member_lease(self._config)}
        for lease in listed:
            name = str((lease.get("metadata") or {}).get("name") or "")
            if not name.startswith(self._prefix):
                continue
            spec = lease.get("spec") or {}
            record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
            seen = self._seen.get(name)
            if seen is None or seen[0] != record:
                seen = (record, now)
                self._seen[name] = seen
            duration = float(spec.get("leaseDurationSeconds") or self._config.lease_duration)
            if record[0] and now < seen[1] + duration:
                live.add(name)
            elif now > seen[1] + duration * _FORGET_AFTER:
                self._backend.delete(ObjectId("coordination.k8s.io", "Lease", self._config.namespace, name))
                self._seen.pop(name, None)
        return len(live)

    def _hand_back(self, fair: int) -> None:
        """Above the fair share, drain one shard (no new claims) and release it once its claims have ended."""
        with self._cond:
            held = sorted(self.held())
            if len(held) > fair and not self._draining:
                shard = held[-1]
                self._draining.add(shard)
                log.info("shard.draining", identity=self.identity, shard=shard, members=self.members, fair=fair)
            idle = [s for s in self._draining if self._inflight[s] == 0]
        for shard in idle:
            self._electors[shard].release()
            with self._cond:
                self._draining.discard(shard)

    def _changed(self, shard: int, held: bool) -> None:
        log.info("shard.held" if held else "shard.dropped", identity=self.identity, shard=shard, shards=self.shards)
        if self._on_change is not None:
            self._on_change(shard, held)

    # -- the loop ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shard-leases", daemon=True)
        self._thread.start()

    def next_round_in(self) -> float:
        """Seconds until the next round: half the renew interval, or less when a shard Lease held by another
        replica expires sooner, so a dead replica's shard is taken as its Lease expires rather than up to a round
        later (its member Lease, renewed just before its shards in each of its rounds, has expired by then too)."""
        now = self._clock.now()
        expiries = [e.expires_at for e in self._electors if not e.is_leader and e.expires_at is not None]
        soonest = min((at - now + _EXPIRY_MARGIN for at in expiries if at > now), default=math.inf)
        return max(_EXPIRY_MARGIN, min(self._config.renew_interval / 2, soonest))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.round()
            self._stop.wait(self.next_round_in())

    def stop(self) -> None:
        """Release every shard and the member Lease (clean shutdown: the others take over at their next round).
        The agent calls this after its workers have finished."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for elector in self._electors:
            elector.release()
        self._member.release()
