"""The StateStore port in memory, for unit tests of what records state (notifications, status, history)."""

from __future__ import annotations

import json

from gitsync.errors import TransientError
from gitsync.model import AppEnv, Json


class MemoryStore:
    """The StateStore port in memory, with its optimistic versions; ``down`` makes every call fail as an
    unreachable API server does."""

    def __init__(self) -> None:
        self.docs: dict[tuple[AppEnv, str, str], tuple[Json, str]] = {}
        self.down = False

    def _reach(self, verb: str) -> None:
        if self.down:
            raise TransientError(f"ConfigMap: {verb} failed: connection refused")

    def load(self, key: AppEnv, namespace: str, part: str) -> tuple[Json, str]:
        self._reach("GET")
        data, version = self.docs.get((key, namespace, part), ({}, ""))
        return json.loads(json.dumps(data)), version

    def save(self, key: AppEnv, namespace: str, part: str, data: Json, version: str) -> str:
        self._reach("PUT")
        if self.docs.get((key, namespace, part), ({}, ""))[1] != version:
            raise TransientError("conflict")
        new = str(int(version or 0) + 1)
        self.docs[(key, namespace, part)] = (json.loads(json.dumps(data)), new)
        return new

    def keys(self, env: str, namespace: str, part: str) -> frozenset[AppEnv]:
        return frozenset(k for k, ns, p in self.docs if (k.env, ns, p) == (env, namespace, part))

    def delete(self, key: AppEnv, namespace: str, part: str) -> None:
        self.docs.pop((key, namespace, part), None)
