"""The inventory's bookkeeping: what it remembers, and that a no-op reconcile does not write it."""

from __future__ import annotations

from gitsync import inventory
from gitsync.model import AppEnv, Json, ObjectId

KEY = AppEnv("shop", "staging")
CM = ObjectId("", "ConfigMap", "shop", "settings")
DEPLOY = ObjectId("apps", "Deployment", "shop", "web")


class MemoryStore:
    """A StateStore in a dict with the adapter's optimistic versioning; counts writes."""

    def __init__(self) -> None:
        self.docs: dict[tuple[AppEnv, str, str], tuple[Json, str]] = {}
        self.writes = 0

    def load(self, key: AppEnv, namespace: str, part: str) -> tuple[Json, str]:
        return self.docs.get((key, namespace, part), ({}, ""))

    def save(self, key: AppEnv, namespace: str, part: str, data: Json, version: str) -> str:
        assert self.load(key, namespace, part)[1] == version
        self.writes += 1
        self.docs[(key, namespace, part)] = (data, str(self.writes))
        return str(self.writes)


def test_round_trip_uses_the_object_id_text_form() -> None:
    store = MemoryStore()
    empty = inventory.load(store, KEY, "shop")
    assert empty == inventory.Inventory()
    stored = inventory.save(store, KEY, "shop", empty.adding([CM, DEPLOY], revision="abc", digest="d1"), empty)
    data, _ = store.load(KEY, "shop", "inventory")
    assert data == {
        "objects": ["ConfigMap/shop/settings", "Deployment.apps/shop/web"],
        "revision": "abc",
        "digest": "d1",
        "memo": {},
    }
    assert inventory.load(store, KEY, "shop") == stored


def test_unchanged_inventory_is_not_written_again() -> None:
    store = MemoryStore()
    first = inventory.save(store, KEY, "shop", inventory.Inventory().adding([CM], revision="r1"), inventory.Inventory())
    again = inventory.load(store, KEY, "shop")
    inventory.save(store, KEY, "shop", again.adding([CM], revision="r1"), again)
    assert store.writes == 1
    assert again == first


def test_adding_keeps_revision_when_none_given_and_removing_drops_objects() -> None:
    inv = inventory.Inventory(frozenset({CM}), "r1", "d1")
    assert inv.adding([DEPLOY]).revision == "r1"
    assert inv.adding([DEPLOY]).removing([CM]).objects == {DEPLOY}
