"""``ports.StateStore`` on ConfigMaps: per app-env state lives in the cluster, so a new agent resumes the work.

One ConfigMap per app-env and part, ``gitsync.<app>.<env>.<part>`` in the environment's namespace (dots cannot
occur in app or env names, so two environments sharing a namespace never collide), holding JSON in
``data["<part>.json"]`` and labelled with the ownership labels plus ``gitsync.dev/state: <part>``. Writes are
optimistic (PUT with the resourceVersion read by ``load``): a concurrent writer makes ``save`` raise a transient
``StaleError`` instead of losing an update. These ConfigMaps are bookkeeping, never part of a render or inventory.

With ``live`` (the agent's watch cache, which the adapter's writes go through) ``load`` reads from memory: a
reconcile reads its state without a request, and a command another process wrote (``gitsync rollout promote``)
arrives by the watch. A save refused as stale makes the next load of that ConfigMap a GET, so a cache a moment
behind never refuses a write twice.
"""

from __future__ import annotations

import json

from gitsync.adapters.kube import KubeCluster
from gitsync.errors import CorruptStateError, StaleError
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, LABEL_STATE, MANAGER, AppEnv, Json, ObjectId
from gitsync.ports import LiveReader

__all__ = ["LABEL_STATE", "ConfigMapStateStore", "document"]


def corrupt(ref: ObjectId, problem: str) -> CorruptStateError:
    """One line: which ConfigMap, what is wrong, and how to reset it (gitsync writes it afresh)."""
    return CorruptStateError(
        f"{ref}: {problem}; reset it with `kubectl -n {ref.namespace} delete configmap {ref.name}` "
        "(the next sync writes it afresh)"
    )


def document(live: Json | None, part: str) -> tuple[Json, str]:
    """The ``part`` document a state ConfigMap holds and its resourceVersion (``({}, "")`` for none): what
    ``load`` returns, also for a ConfigMap taken from a list (the dashboard reads every app-env in one list)."""
    if live is None:
        return {}, ""
    meta = live["metadata"]
    ref = ObjectId("", "ConfigMap", str(meta.get("namespace", "")), str(meta.get("name", "")))
    raw = (live.get("data") or {}).get(f"{part}.json") or "{}"
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise corrupt(ref, f"{part}.json is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise corrupt(ref, f"{part}.json is not a JSON object")
    return data, str(meta["resourceVersion"])


class ConfigMapStateStore:
    def __init__(self, cluster: KubeCluster, live: LiveReader | None = None) -> None:
        self._cluster = cluster
        self._live = live
        self._stale: set[ObjectId] = set()

    @staticmethod
    def ref(key: AppEnv, namespace: str, part: str) -> ObjectId:
        """The ConfigMap holding ``part`` for ``key``."""
        return ObjectId("", "ConfigMap", namespace, key.state_name(part))

    def load(self, key: AppEnv, namespace: str, part: str) -> tuple[Json, str]:
        ref = self.ref(key, namespace, part)
        reader: LiveReader = self._cluster if self._live is None or ref in self._stale else self._live
        self._stale.discard(ref)
        return document(reader.get(ref), part)

    def save(self, key: AppEnv, namespace: str, part: str, data: Json, version: str) -> str:
        ref = self.ref(key, namespace, part)
        metadata: Json = {
            "name": ref.name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_APP: key.app, LABEL_ENV: key.env, LABEL_STATE: part},
        }
        if version:
            metadata["resourceVersion"] = version
        body: Json = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {f"{part}.json": json.dumps(data, sort_keys=True, separators=(",", ":"))},
        }
        try:
            stored = self._cluster.replace(body) if version else self._cluster.create(body)
        except StaleError:
            self._stale.add(ref)
            raise
        return str(stored["metadata"]["resourceVersion"])

    def keys(self, env: str, namespace: str, part: str) -> frozenset[AppEnv]:
        selector = f"{LABEL_STATE}={part},{LABEL_ENV}={env},{LABEL_MANAGED_BY}={MANAGER}"
        listed = self._cluster.list("", "ConfigMap", namespace, selector, metadata_only=True).items
        apps = {str(((cm.get("metadata") or {}).get("labels") or {}).get(LABEL_APP, "")) for cm in listed}
        return frozenset(AppEnv(app, env) for app in apps if app)

    def delete(self, key: AppEnv, namespace: str, part: str) -> None:
        self._cluster.delete(self.ref(key, namespace, part))
