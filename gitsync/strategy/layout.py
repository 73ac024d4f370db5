"""The names and bodies of a rendered workload's tracks: ``<name>`` (stable), ``<name>-canary``, ``<name>-blue``
and ``<name>-green``, the Services pointed at them and the HPA aimed at the serving one.

Contract: pure, no I/O. The canary Deployment runs the rendered template and selector exactly (the Deployment itself
is labelled ``gitsync.dev/track: canary``), paused: its pods belong to a ReplicaSet the executor makes,
``<name>-<hash>`` (``replica_set``), so that at promotion that ReplicaSet can become the stable Deployment's own
(same template, same selector, pod names of the stable's) without a pod started again. The rendered Service
selects the app's labels and so spans both tracks. Blue-green pods and selectors carry ``gitsync.dev/color``; the
active and preview Services get that label in their selectors. Each Deployment the executor applies carries the
hash of its pod template (``gitsync.dev/template-hash``), which is how a resumed agent knows what runs where.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gitsync.model import LABEL_TRACK, Json, Manifest, ObjectId
from gitsync.ports import RenderedApp
from gitsync.strategy.model import ServiceRole, Track
from gitsync.strategy.policy import PolicyError, RolloutPolicy, Strategy

__all__ = [
    "ANNOTATION_SPEC_HASH",
    "ANNOTATION_TEMPLATE_HASH",
    "LABEL_COLOR",
    "LABEL_TRACK",
    "POD_TEMPLATE_HASH",
    "Layout",
    "autoscalers_of",
    "controller_ref",
    "digest",
    "selector_of",
    "services_of",
    "spec_hash",
    "template_hash",
    "track_ref",
    "workload_of",
]

LABEL_COLOR = "gitsync.dev/color"
ANNOTATION_TEMPLATE_HASH = "gitsync.dev/template-hash"
ANNOTATION_SPEC_HASH = "gitsync.dev/spec-hash"
POD_TEMPLATE_HASH = "pod-template-hash"
"""The label the Deployment controller tells its ReplicaSets' pods apart by; the canary's ReplicaSet sets its own."""


def template_hash(body: Mapping[str, Any]) -> str:
    """Hash of a Deployment's pod template: what identifies a release of it (a config-only change moves it
    through the renderer's config-hash annotation on the template)."""
    template = (body.get("spec") or {}).get("template") or {}
    return digest(template)


def spec_hash(body: Mapping[str, Any]) -> str:
    """Hash of a Deployment minus its replicas: a change of it without a template change needs no rollout."""
    trimmed = copy.deepcopy(dict(body))
    (trimmed.get("spec") or {}).pop("replicas", None)
    return digest(trimmed)


def selector_of(body: Mapping[str, Any]) -> Json:
    """A Deployment's ``spec.selector`` ({} when it has none): immutable, so a change of it means a new object."""
    return dict((body.get("spec") or {}).get("selector") or {})


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def workload_of(rendered: RenderedApp, policy: RolloutPolicy) -> Manifest:
    deployments = [m for m in rendered.manifests if m.id.kind == "Deployment"]
    if policy.workload:
        deployments = [m for m in deployments if m.id.name == policy.workload]
    if len(deployments) != 1:
        found = ", ".join(m.id.name for m in deployments) or "none"
        raise PolicyError(
            f"{rendered.app_env}: values: rollout.workload: {policy.strategy.value} needs exactly one Deployment "
            f"(found: {found}); name it in rollout.workload"
        )
    return deployments[0]


def services_of(rendered: RenderedApp, policy: RolloutPolicy) -> dict[ServiceRole, Manifest]:
    bg = policy.blue_green
    if policy.strategy is not Strategy.BLUE_GREEN or bg is None:
        return {}
    by_name = {m.id.name: m for m in rendered.manifests if m.id.kind == "Service"}
    out: dict[ServiceRole, Manifest] = {}
    for role, name, field_name in (
        (ServiceRole.ACTIVE, bg.active_service or workload_of(rendered, policy).id.name, "activeService"),
        (ServiceRole.PREVIEW, bg.preview_service, "previewService"),
    ):
        if not name:
            continue
        if name not in by_name:
            raise PolicyError(
                f"{rendered.app_env}: values: rollout.blueGreen.{field_name}: no Service {name!r} rendered"
            )
        out[role] = by_name[name]
    return out


class Layout:
    """The names and bodies of the tracks of one rendered workload (the policy's ``rollout.workload``)."""

    def __init__(self, rendered: RenderedApp, policy: RolloutPolicy, workload: Manifest | None = None) -> None:
        self.rendered = rendered
        self.policy = policy
        self.workload = workload or workload_of(rendered, policy)
        self.services = services_of(rendered, policy)
        self.autoscalers = autoscalers_of(rendered, self.workload) if policy.strategy is Strategy.BLUE_GREEN else ()
        self.namespace = self.workload.id.namespace or rendered.namespace
        spec = self.workload.body.get("spec") or {}
        self.total = int(spec.get("replicas", 1))
        self.replicas_rendered = "replicas" in spec
        """False when the chart leaves replicas to an HPA (Helm's ``if not .Values.autoscaling.enabled``)."""
        self.selector: dict[str, str] = dict((spec.get("selector") or {}).get("matchLabels") or {})

    def owned(self) -> frozenset[ObjectId]:
        """What sync must leave to the executor: the rendered objects it applies itself (the workload, the
        Services it points, the HPA it aims) and the tracks it made (``track_refs``)."""
        rendered = {self.workload.id, *(m.id for m in self.services.values()), *(m.id for m in self.autoscalers)}
        return frozenset(rendered) | self.track_refs()

    def track_refs(self) -> frozenset[ObjectId]:
        """The canary and colour Deployments of this workload, whichever exist: the executor's own, in the app's
        inventory so that removing the app removes them, and never pruned by sync (they are not rendered)."""
        rendered = {m.id for m in self.rendered.manifests}
        return frozenset(self.ref(t) for t in (Track.CANARY, Track.BLUE, Track.GREEN)) - rendered

    def track_label(self, track: Track) -> tuple[str, str] | None:
        if track is Track.CANARY:
            return LABEL_TRACK, track.value
        if track in (Track.BLUE, Track.GREEN):
            return LABEL_COLOR, track.value
        return None

    def ref(self, track: Track) -> ObjectId:
        return track_ref(self.namespace, self.workload.id.name, track)

    def body(self, track: Track, replicas: int) -> Json:
        """The rendered Deployment as ``track`` runs it (the canary paused: its ReplicaSet is ``replica_set``)."""
        body = copy.deepcopy(self.workload.body)
        annotations = body.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[ANNOTATION_TEMPLATE_HASH] = template_hash(self.workload.body)
        annotations[ANNOTATION_SPEC_HASH] = spec_hash(self.workload.body)
        body.setdefault("spec", {})["replicas"] = replicas
        if track is Track.CANARY:
            body["spec"]["paused"] = True
        return self.coloured(body, track)

    def coloured(self, body: Json, track: Track) -> Json:
        """``body`` (a Deployment of this workload) named and labelled as ``track``'s; changed in place. A colour's
        label goes on its selector and pods too; the canary's only on the Deployment (``replica_set``)."""
        meta = body.setdefault("metadata", {})
        meta["name"] = self.ref(track).name
        meta["namespace"] = self.namespace
        spec = body.setdefault("spec", {})
        extra = self.track_label(track)
        if extra:
            key, value = extra
            if track is not Track.CANARY:
                spec.setdefault("selector", {}).setdefault("matchLabels", {})[key] = value
                spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})[key] = value
            meta.setdefault("labels", {})[key] = value
        return body

    def replica_set_ref(self, template: str) -> ObjectId:
        """The canary's ReplicaSet for the pod template whose hash is ``template``: named as the stable Deployment's
        own ReplicaSets are (``<name>-<hash>``), so its pods keep fitting names once it is the stable's."""
        return ObjectId("apps", "ReplicaSet", self.namespace, f"{self.workload.id.name}-{template[:10]}")

    def replica_set(self, canary: Json) -> Json:
        """The canary's ReplicaSet, controlled by the live (paused) ``canary`` Deployment: the rendered template and
        selector plus ``pod-template-hash``. Created at zero replicas, so its count belongs to the Deployment
        controller from its first scale on (the hand-over then applies it without a count)."""
        workload_hash = template_hash(self.workload.body)
        pod_hash = workload_hash[:10]
        spec = self.workload.body.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[POD_TEMPLATE_HASH] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": self.replica_set_ref(workload_hash).name,
                "namespace": self.namespace,
                "labels": dict(labels),
                "annotations": {ANNOTATION_TEMPLATE_HASH: workload_hash},
                "ownerReferences": [controller_ref(canary)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }

    def service_hash(self, role: ServiceRole) -> str:
        return digest(self.services[role].body)

    def service_body(self, role: ServiceRole, track: Track) -> Json | None:
        manifest = self.services.get(role)
        if manifest is None:
            return None
        body = copy.deepcopy(manifest.body)
        meta = body.setdefault("metadata", {})
        meta["namespace"] = manifest.id.namespace or self.namespace
        meta.setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = self.service_hash(role)
        selector = dict((body.setdefault("spec", {}).get("selector")) or self.selector)
        extra = self.track_label(track)
        if extra:
            selector[extra[0]] = extra[1]
        body["spec"]["selector"] = selector
        return body

    def autoscaler_body(self, manifest: Manifest, track: Track) -> Json:
        """A rendered HPA of the workload, aimed at ``track``'s Deployment (under blue-green the rendered one is
        at zero, and an HPA does not scale a Deployment at zero)."""
        body = copy.deepcopy(manifest.body)
        meta = body.setdefault("metadata", {})
        meta["namespace"] = manifest.id.namespace or self.namespace
        meta.setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = digest(manifest.body)
        body.setdefault("spec", {}).setdefault("scaleTargetRef", {})["name"] = self.ref(track).name
        return body


def autoscalers_of(rendered: RenderedApp, workload: Manifest) -> tuple[Manifest, ...]:
    """The rendered HorizontalPodAutoscalers that scale ``workload``."""
    namespace = workload.id.namespace or rendered.namespace
    return tuple(
        m
        for m in rendered.manifests
        if m.id.kind == "HorizontalPodAutoscaler"
        and (m.id.namespace or rendered.namespace) == namespace
        and ((m.body.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == "Deployment"
        and ((m.body.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == workload.id.name
    )


def controller_ref(owner: Json) -> Json:
    """An ownerReference making the live Deployment ``owner`` the controller of the object that carries it."""
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "controller": True,
    }


def track_ref(namespace: str, workload: str, track: Track) -> ObjectId:
    return ObjectId("apps", "Deployment", namespace, workload if track is Track.STABLE else f"{workload}-{track.value}")
