"""Shard Leases (gitsync.runtime.shards): replicas share the shards fairly, every shard has one holder, a dead
replica's shards are taken within the lease duration, and a shard is handed back only after its claims end."""

from __future__ import annotations

import copy
import itertools
from collections import Counter

import pytest

from gitsync.errors import StaleError
from gitsync.model import AppEnv, Json, ObjectId
from gitsync.ports import ObjectList
from gitsync.runtime.config import LeaderElection
from gitsync.runtime.shards import ShardSet, member_lease, shard_of


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Leases:
    """An API server's Lease store: optimistic writes by resourceVersion, as the real one."""

    def __init__(self) -> None:
        self.objects: dict[str, Json] = {}
        self.version = itertools.count(1)

    def get(self, ref: ObjectId) -> Json | None:
        found = self.objects.get(ref.name)
        return copy.deepcopy(found) if found else None

    def create(self, body: Json) -> Json:
        name = body["metadata"]["name"]
        if name in self.objects:
            raise StaleError(f"Lease/{name}: exists")
        return self._store(body)

    def replace(self, body: Json) -> Json:
        name = body["metadata"]["name"]
        if self.objects[name]["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise StaleError(f"Lease/{name}: conflict")
        return self._store(body)

    def _store(self, body: Json) -> Json:
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(next(self.version))
        self.objects[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def list(
        self, group: str, kind: str, namespace: str = "", label_selector: str = "", *, metadata_only: bool = False
    ) -> ObjectList:
        return ObjectList(tuple(copy.deepcopy(o) for o in self.objects.values()), "1")

    def delete(self, ref: ObjectId, *, propagation: str = "Background") -> bool:
        return self.objects.pop(ref.name, None) is not None

    def holders(self, shards: int) -> list[str]:
        return [
            str(self.objects.get(f"gitsync-shard-{i}", {}).get("spec", {}).get("holderIdentity", ""))
            for i in range(shards)
        ]


def replica(leases: Leases, clock: FakeClock, name: str, shards: int = 3) -> ShardSet:
    config = LeaderElection(identity=name, lease_name="gitsync", lease_duration=15.0, renew_interval=5.0)
    return ShardSet(leases, config, shards, clock)


def rounds(clock: FakeClock, replicas: list[ShardSet], n: int = 1, step: float = 2.5) -> None:
    for _ in range(n):
        for r in replicas:
            r.round()
        clock.t += step


def test_the_shard_of_an_app_env_is_stable_and_spreads() -> None:
    keys = [AppEnv(f"app{i}", env) for i in range(300) for env in ("staging", "prod")]
    assert [shard_of(k, 3) for k in keys] == [shard_of(k, 3) for k in keys]
    spread = Counter(shard_of(k, 3) for k in keys)
    assert set(spread) == {0, 1, 2} and min(spread.values()) > 150
    assert shard_of(AppEnv("podinfo", "staging"), 3) == shard_of(AppEnv("podinfo", "staging"), 3)


def test_three_replicas_hold_one_shard_each_whatever_the_start_order() -> None:
    leases, clock = Leases(), FakeClock()
    a = replica(leases, clock, "a")
    rounds(clock, [a], 2)
    assert a.held() == {0, 1, 2}  # alone, it holds everything
    b, c = replica(leases, clock, "b"), replica(leases, clock, "c")
    rounds(clock, [a, b, c], 6)
    assert sorted(len(r.held()) for r in (a, b, c)) == [1, 1, 1]
    assert sorted(leases.holders(3)) == ["a", "b", "c"]


def test_a_dead_replica_loses_its_shards_to_the_others_within_the_lease_duration() -> None:
    leases, clock = Leases(), FakeClock()
    a, b, c = (replica(leases, clock, n) for n in "abc")
    rounds(clock, [a, b, c], 6)
    lost = c.held()
    dead_at = clock.t  # c stops renewing (kill -9): no release
    while any(h == "c" for h in leases.holders(3)):
        rounds(clock, [a, b])
        assert clock.t - dead_at <= 15.0 + 2 * 2.5, "not taken over within the lease duration and two rounds"
    assert a.held() | b.held() == {0, 1, 2} and not (a.held() & b.held())
    assert lost <= a.held() | b.held()


def test_a_dead_replicas_shard_is_taken_as_its_lease_expires_not_a_round_later() -> None:
    """Each survivor's round takes ``work`` seconds, then it waits what ``next_round_in`` says (as the Lease thread
    does): the shard is taken as the Lease expires on the survivor's clock (``leaseDuration`` after it first saw the
    last renewal), not up to a round later."""
    work = 0.4
    leases, clock = Leases(), FakeClock()
    replicas = {name: replica(leases, clock, name) for name in "abc"}
    rounds(clock, list(replicas.values()), 6)
    for victim, offset in (("c", 0.3), ("a", 1.1), ("b", 2.2), ("c", 2.8)):  # where in the rounds the kill falls
        survivors = [r for name, r in replicas.items() if name != victim]
        lost = replicas[victim].held()
        clock.t += offset
        dead_at = clock.t
        due = dict.fromkeys(survivors, clock.t)
        while any(h == victim for h in leases.holders(3)):
            clock.t = min(due.values())
            now = clock.t
            for r in [r for r in survivors if due[r] <= now]:
                r.round()
                clock.t = now + work  # the round's requests took this long; then it asks when to run again
                due[r] = clock.t + r.next_round_in()
                clock.t = now
            # The survivors first saw the victim's last renewal in their first round after the kill (dead_at).
            assert clock.t - dead_at <= 15.0 + 0.05 + 0.01, f"{victim}'s shard not taken as its Lease expired"
        held = [r.held() for r in survivors]
        assert lost <= held[0] | held[1] and not (held[0] & held[1])
        replicas[victim] = replica(leases, clock, victim)  # it comes back, a fresh process with the same identity
        rounds(clock, list(replicas.values()), 12)
        assert replicas[victim].held(), "the returning replica gets its share again"


def test_no_two_replicas_ever_hold_a_shard_at_once() -> None:
    leases, clock = Leases(), FakeClock()
    replicas = [replica(leases, clock, n, shards=4) for n in "abc"]
    for step in range(40):
        live = replicas if step < 20 else replicas[:2]
        rounds(clock, live)
        held = [s for r in live for s in r.held()]
        assert len(held) == len(set(held))
    assert set(itertools.chain.from_iterable(r.held() for r in replicas[:2])) == {0, 1, 2, 3}


def test_a_shard_is_handed_back_only_after_its_reconciles_in_flight_ended() -> None:
    leases, clock = Leases(), FakeClock()
    a = replica(leases, clock, "a", shards=2)
    rounds(clock, [a], 2)
    key = next(AppEnv(f"app{i}", "staging") for i in range(50) if shard_of(AppEnv(f"app{i}", "staging"), 2) == 1)
    with a.claim(key) as owned:
        assert owned
        b = replica(leases, clock, "b", shards=2)
        rounds(clock, [a, b], 4)
        assert a.held() == {0, 1} and not a.owns(key)  # draining: no new claim, the Lease is kept
        with a.claim(key) as again:
            assert not again
    rounds(clock, [a, b], 2)
    assert a.held() == {0} and b.held() == {1}


def test_member_lease_names_are_valid_object_names() -> None:
    config = LeaderElection(identity="Host_1.example-4242", lease_name="gitsync")
    name = member_lease(config)
    assert name.startswith("gitsync-member-host-1-example-4242-")
    assert member_lease(LeaderElection(identity="pod-a", lease_name="gitsync")) == "gitsync-member-pod-a"


@pytest.mark.parametrize("shards", [1, 2, 5])
def test_every_shard_has_a_holder_for_any_count(shards: int) -> None:
    leases, clock = Leases(), FakeClock()
    replicas = [replica(leases, clock, n, shards=shards) for n in "abc"]
    rounds(clock, replicas, 8)
    assert all(leases.holders(shards))
