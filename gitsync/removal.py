"""Removing an app that left its environment's ``env.yaml``: the reconcile line's empty render.

Which apps left (``inventory.departed``) is read from the cluster, the same way by the agent's discovery and by
``gitsync sync`` and ``gitsync diff``: the app-envs of the environment that gitsync holds an inventory for in its
namespace and whose app ``env.yaml`` no longer lists. Each one's whole inventory goes through the one prune stage
(``sync_app`` of nothing, with an empty render allowed), so every guard holds: reverse apply order,
``gitsync.dev/prune: "false"`` kept, failed deletions kept and retried. Its rollout state and inventory are dropped
only after the removal is recorded (the inventory only once no ledger line of it waits in the status for the
Git remote: ``forget``); status and history stay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gitsync import inventory as inventories
from gitsync.model import AppEnv, Manifest, ObjectId
from gitsync.ports import Cluster, StateStore
from gitsync.strategy.executor import PART as ROLLOUT_PART
from gitsync.strategy.executor import made_deployments
from gitsync.sync import SyncResult, sync_app

__all__ = ["forget", "preview", "prune_all"]


def prune_all(
    cluster: Cluster, store: StateStore, key: AppEnv, namespace: str, revision: str, before: inventories.Inventory
) -> SyncResult:
    """Delete everything ``key`` holds in the cluster (see the module doc)."""
    made = _rollout_workloads(cluster, key, before.objects)
    if made - before.objects:
        # Tracks made by an agent from before tracks were inventoried: inventory them so they go too.
        inventories.save(store, key, namespace, before.adding(made), before)
    return sync_app(_Emptied(key, namespace, revision), cluster, store, prune=True, dry_run=False)


def preview(cluster: Cluster, store: StateStore, key: AppEnv, namespace: str, revision: str) -> SyncResult:
    """What ``prune_all`` would delete, planned by a dry run that writes nothing (``gitsync diff``, ``sync
    --dry-run``): the inventory's objects as deletes, those it keeps (``gitsync.dev/prune: "false"``) as orphaned."""
    return sync_app(_Emptied(key, namespace, revision), cluster, store, prune=True, dry_run=True)


def _rollout_workloads(cluster: Cluster, key: AppEnv, inventory: frozenset[ObjectId]) -> frozenset[ObjectId]:
    """Deployments the rollout executor made for ``key`` (canary, blue, green: labelled as the app's and
    carrying its template hash) in the namespaces of the inventory's Deployments."""
    namespaces = sorted({ref.namespace for ref in inventory if ref.kind == "Deployment"})
    return frozenset(ObjectId.of(live) for ns in namespaces for live in made_deployments(cluster, key, ns))


@dataclass(frozen=True, slots=True)
class _Settings:
    """``ports.EnvironmentSettings`` of a removal: emptying the app is the point, so an empty render prunes."""

    prune_allow_empty: bool = True


@dataclass(frozen=True, slots=True)
class _Emptied:
    """What an app that left its environment renders to: nothing (a ``ports.RenderedApp``). ``sync_app`` of it
    prunes the app's whole inventory through the one prune stage, with all of its guards and bookkeeping."""

    app_env: AppEnv
    namespace: str
    revision: str | None
    manifests: tuple[Manifest, ...] = ()
    digest: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    environment: _Settings = _Settings()
    pin: None = None


def forget(store: StateStore, key: AppEnv, namespace: str, *, lines_kept: bool) -> None:
    """Drop a removed app's rollout state and inventory (last); its status (now ``Removed``) and history stay, so
    ``gitsync history`` still lists the app and auditors can read what ran. While the status keeps ledger lines
    the Git remote did not take (``lines_kept``: its ``Removed`` line), the emptied inventory stays: it is what
    makes the app-env a departed one (``inventory.departed``), so an agent restarted before the remote is back
    removes it again, which writes the kept line and then drops the inventory."""
    store.delete(key, namespace, ROLLOUT_PART)
    if not lines_kept:
        store.delete(key, namespace, inventories.PART)
