"""The shared vocabulary of gitsync: object identity, ownership labels and the values that flow between stages.

Contract: pure, no I/O, imports nothing from the rest of gitsync (``renderers`` builds on it). The label and
annotation names below are part of the wire format: objects in users' clusters carry them, so they never change.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MANAGER = "gitsync"
"""Field manager for every server-side apply; the owner of the fields gitsync declares."""

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_APP = "gitsync.dev/app"
LABEL_ENV = "gitsync.dev/env"
LABEL_TRACK = "gitsync.dev/track"
"""On a Deployment a rollout runs beside the stable one (``canary``): paused by design, it is judged by its pods."""
LABEL_STATE = "gitsync.dev/state"
"""On gitsync's own state ConfigMaps only: which part of an app-env's state one holds (``status``, ``inventory``)."""
RECORD_PREFIX = f"{MANAGER}."
"""Names of gitsync's own state ConfigMaps start with this (``gitsync.<app>.<env>.<part>``); no render may make
one, since an inventory is what prune deletes from and a rollout's state what the executor acts on."""

ANNOTATION_WAVE = "gitsync.dev/wave"
"""Integer; lower waves are applied (and waited for) before higher ones. Default 0."""
ANNOTATION_PRUNE = "gitsync.dev/prune"
"""``"false"`` keeps an object in the cluster when it leaves the render."""
ANNOTATION_IGNORE = "gitsync.dev/ignore-differences"
"""Comma-separated JSON pointers (``/spec/replicas``) whose live values are never reported as drift."""
ANNOTATION_RECREATE = "gitsync.dev/recreate"
"""``"true"``: a change to an immutable field deletes and recreates the object instead of failing."""
ANNOTATION_FORCE = "gitsync.dev/force-conflicts"
"""``"true"``: take over fields owned by another field manager instead of reporting a conflict."""
ANNOTATION_CONFIG_HASH = "gitsync.dev/config-hash"
"""Set on pod templates by the renderer's ``config_hash`` helper so a config-only change rolls the workload."""

SERVER_OWNED_METADATA = (
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
)
"""``metadata`` fields the API server writes: the record of one stored object, never intent. The renderer drops them
from every manifest (one copied from ``kubectl get -o yaml`` carries them), and drift comparison ignores them."""

DELETION_METADATA = ("deletionTimestamp", "deletionGracePeriodSeconds")
"""``metadata`` fields the API server sets when an object is being deleted. Not server-owned noise to drop
everywhere: they are how health and the waits tell a terminating object. Dropped, with ``SERVER_OWNED_METADATA``,
only where a live object is turned back into a create request (a recreate that puts the previous object back)."""

Json = dict[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class ObjectId:
    """The one identity of a Kubernetes object. ``str()`` is its only text form (logs, errors, inventory).

    ``group`` is empty for the core API; ``namespace`` is empty for cluster-scoped objects.
    """

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind}/{self.namespace}/{self.name}" if self.namespace else f"{kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ObjectId:
        """Inverse of ``str()``: ``Deployment.apps/shop/web`` or ``Namespace/shop``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"not an object id: {text!r} (want Kind[.group]/[namespace/]name)")
        kind, _, group = parts[0].partition(".")
        if len(parts) == 3:
            return cls(group, kind, parts[1], parts[2])
        return cls(group, kind, "", parts[1])

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectId:
        """The identity of a manifest or live object (``apiVersion`` ``group/version`` or ``version``)."""
        api_version = str(obj.get("apiVersion", ""))
        group = api_version.rpartition("/")[0]
        meta = obj.get("metadata") or {}
        return cls(group, str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))


@dataclass(frozen=True, slots=True, order=True)
class AppEnv:
    """The unit of work: one app in one environment. Keys the queue, locks, state, metrics and logs."""

    app: str
    env: str

    def __str__(self) -> str:
        return f"{self.app}@{self.env}"

    def state_name(self, part: str) -> str:
        """The name of the ConfigMap holding ``part`` of this app-env's state (``gitsync.podinfo.staging.status``):
        the state store writes it, Events name it as their object. Wire format: never changes."""
        return f"{RECORD_PREFIX}{self.app}.{self.env}.{part}"

    def owns(self, live: Mapping[str, Any]) -> bool:
        """Whether ``live`` carries this app-env's ownership labels: only such an object may be pruned for it, so an
        inventory entry that names anything else (another environment's object, one another app took over, one a
        forged record listed) never deletes it."""
        labels = (live.get("metadata") or {}).get("labels") or {}
        return (labels.get(LABEL_MANAGED_BY), labels.get(LABEL_APP), labels.get(LABEL_ENV)) == (
            MANAGER,
            self.app,
            self.env,
        )

    def foreign(self, live: Mapping[str, Any] | None) -> str:
        """Whose ``live`` is when it is labelled as another's ("" when it is this app-env's, unlabelled, or absent):
        another app-env of gitsync, or another tool (``app.kubernetes.io/managed-by``). The rollout's tracks are
        found by name (``<workload>-canary``), and a name is no proof of ownership."""
        live = live or {}
        labels = (live.get("metadata") or {}).get("labels") or {}
        manager = labels.get(LABEL_MANAGED_BY)
        if manager is None or self.owns(live):
            return ""
        if manager == MANAGER:
            return f"app {labels.get(LABEL_APP, '?')} in environment {labels.get(LABEL_ENV, '?')}"
        return str(manager)


def split_pointers(raw: str) -> tuple[str, ...]:
    """The JSON pointers of an ``ANNOTATION_IGNORE`` value (comma- or newline-separated, blanks dropped): one
    reading for the renderer's check and the plan's comparison."""
    return tuple(p.strip() for p in raw.replace("\n", ",").split(",") if p.strip())


def is_record(ref: ObjectId) -> bool:
    """Whether ``ref`` names one of gitsync's own state ConfigMaps (in any namespace)."""
    return ref.group == "" and ref.kind == "ConfigMap" and ref.name.startswith(RECORD_PREFIX)


# Apply order by kind: what others depend on comes first (Helm's install order, trimmed to what matters).
_KIND_ORDER = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "NetworkPolicy",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "PodDisruptionBudget",
    "Ingress",
    "APIService",
)
_KIND_RANK = {kind: rank for rank, kind in enumerate(_KIND_ORDER)}


def kind_rank(kind: str) -> int:
    """Position of a kind in apply order; unknown kinds (custom resources) come after all built-ins."""
    return _KIND_RANK.get(kind, len(_KIND_ORDER))


def apply_order(obj_id: ObjectId) -> tuple[int, str, str, str]:
    """Sort key used for rendering output, apply order (ascending) and prune order (descending)."""
    return (kind_rank(obj_id.kind), obj_id.namespace, obj_id.name, obj_id.group)


@dataclass(frozen=True, slots=True)
class Manifest:
    """One desired object as rendered. ``body`` is JSON-ready and must be treated as read-only.

    ``source`` is the ``template:line`` that produced it, so errors about the object point at the file.
    ``fingerprint`` identifies the body's content (a hash of its ``canonical`` form); the renderer passes the one
    it computes anyway, so the sync engine does not encode 1,000 objects again to compare them with its memo.
    """

    id: ObjectId
    body: Json = field(compare=False, hash=False)
    source: str = ""
    fingerprint: str = field(default="", compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(canonical(self.body)))

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.body.get("metadata", {}).get("annotations") or {}

    @property
    def runs_once(self) -> bool:
        """A Job that removes itself when done (``spec.ttlSecondsAfterFinished``), as upstream installs ship their
        setup Jobs (ingress-nginx's admission certificate Jobs): it runs once per body. Once gitsync applied this
        body, its absence is the TTL controller's doing, not drift, and it is not created again until the body
        changes (Helm's and Argo CD's hooks give such Jobs the same once-per-change life)."""
        spec = self.body.get("spec") or {}
        return self.id.group == "batch" and self.id.kind == "Job" and spec.get("ttlSecondsAfterFinished") is not None

    @property
    def wave(self) -> int:
        """The object's apply wave (``gitsync.dev/wave``); 0 when absent."""
        raw = self.annotations.get(ANNOTATION_WAVE, "0")
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{self.id}: annotation {ANNOTATION_WAVE} is not an integer: {raw!r}") from None


class SyncAction(StrEnum):
    """What a sync did (or would do) to one object. Values are the log and wire format."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"


class HealthStatus(StrEnum):
    """Health of an object or an app-env, ordered best to worst by ``HEALTH_SEVERITY``."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    SUSPENDED = "Suspended"
    MISSING = "Missing"
    DEGRADED = "Degraded"
    UNKNOWN = "Unknown"


HEALTH_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.SUSPENDED: 1,
    HealthStatus.PROGRESSING: 2,
    HealthStatus.UNKNOWN: 3,
    HealthStatus.MISSING: 4,
    HealthStatus.DEGRADED: 5,
}


class SyncState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Made once: ``json.dumps`` builds an encoder per call, a quarter of the cost for 1,000 objects."""


def canonical(body: Any) -> str:
    """The one canonical text of an object: JSON, sorted keys, no whitespace, UTF-8 as is. Raises ``TypeError``
    or ``ValueError`` for what Kubernetes could not be sent (NaN, a set, a date)."""
    return _CANONICAL.encode(body)


def fingerprint(canonical_text: str) -> str:
    return hashlib.sha256(canonical_text.encode()).hexdigest()[:16]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(raw: Any) -> float:
    """``10s``, ``1.5m``, ``500ms``, ``2h`` or a plain number of seconds: the one spelling of a duration in
    agent.yaml, env.yaml (``promotion.soak``) and rollout values. Raises ``ValueError``."""
    if isinstance(raw, bool):
        raise ValueError(f"not a duration: {raw!r}")
    if isinstance(raw, int | float):
        if raw < 0:
            raise ValueError(f"not a duration: {raw!r}")
        return float(raw)
    match = _DURATION.match(str(raw))
    if match is None:
        raise ValueError(f"not a duration: {raw!r} (want e.g. 10s, 2m, 500ms)")
    return float(match[1]) * _UNIT[match[2]]
