"""From rendered documents to the app's manifests: checked, owned, placed, ordered, and digested. Pure.

Every object gets the ownership labels and, when namespaced, the environment's namespace, and loses the metadata
the API server writes (``SERVER_OWNED_METADATA``: ``resourceVersion``, ``uid``, ``creationTimestamp`` ...), which a
manifest copied from ``kubectl get -o yaml`` carries: sent back, a stale ``resourceVersion`` or a ``uid`` is a
precondition the server refuses (HTTP 409) and ``managedFields`` a request it rejects (400). Dropped here, the
render digest, the diff and the apply all see the same object. Identity is
``gitsync.model.ObjectId``; order is ``gitsync.model.apply_order``; the digest is SHA-256 over the canonical
JSON (sorted keys, compact) of the ordered objects, the same form ``gitsync render`` prints, so the digest
changes exactly when the output does.

No object may be one of gitsync's own state records (a ConfigMap named ``gitsync.*``, or anything labelled
``gitsync.dev/state``): a chart that wrote another app's inventory would make that app's prune delete whatever the
forged inventory names, in any namespace.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from gitsync.model import (
    ANNOTATION_FORCE,
    ANNOTATION_IGNORE,
    ANNOTATION_PRUNE,
    ANNOTATION_RECREATE,
    ANNOTATION_WAVE,
    LABEL_APP,
    LABEL_ENV,
    LABEL_MANAGED_BY,
    LABEL_STATE,
    MANAGER,
    RECORD_PREFIX,
    SERVER_OWNED_METADATA,
    Manifest,
    ObjectId,
    apply_order,
    canonical,
    fingerprint,
    is_record,
    split_pointers,
)
from renderers.environment import Environment
from renderers.errors import RenderError

CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterTrustBundle",
        "ComponentStatus",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "DeviceClass",
        "FlowSchema",
        "IngressClass",
        "IPAddress",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "ServiceCIDR",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
        "VolumeAttributesClass",
    }
)
"""Built-in kinds without a namespace; custom ones are declared in env.yaml ``clusterScopedKinds``."""


def digest(manifests: Iterable[Manifest]) -> str:
    """``sha256:<hex>`` over the canonical form of ``manifests`` in their (apply) order."""
    sha = hashlib.sha256()
    for manifest in manifests:
        sha.update(canonical(manifest.body).encode())
        sha.update(b"\n")
    return f"sha256:{sha.hexdigest()}"


def build_manifests(body: Any, path: str, line: int, environment: Environment, app: str) -> Iterator[Manifest]:
    """The owned ``Manifest`` of one document, or of each item of a ``List`` document, as kubectl expands them.

    A ``v1 List`` (or any ``*List`` kind whose ``items`` is a list, nested lists included) stands for its items;
    an item's problems read ``path:line: items[2]: ...`` at the list's line.
    """
    yield from _expand(body, path, line, environment, app, "")


def _expand(body: Any, path: str, line: int, environment: Environment, app: str, where: str) -> Iterator[Manifest]:
    kind = body.get("kind") if isinstance(body, dict) else None
    if isinstance(kind, str) and kind.endswith("List") and "items" in body:
        items = body["items"]
        if not isinstance(items, list):
            raise RenderError(path, f"{where}{kind}: items must be a list of objects", line)
        for index, item in enumerate(items):
            yield from _expand(item, path, line, environment, app, f"{where}items[{index}]: ")
        return
    yield _build_manifest(body, path, line, environment, app, where)


def _build_manifest(body: Any, path: str, line: int, environment: Environment, app: str, where: str = "") -> Manifest:
    """Check one rendered document and make it an owned ``Manifest``; problems are ``RenderError`` at ``path:line``.

    ``where`` prefixes each problem (``items[2]: `` for an item of a ``List``).
    """

    def fail(problem: str) -> RenderError:
        return RenderError(path, where + problem, line)

    if not isinstance(body, dict):
        raise fail(f"a rendered document must be a Kubernetes object (a mapping), got {type(body).__name__}")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    meta = body.get("metadata")
    if not isinstance(api_version, str) or not api_version:
        raise fail("object has no apiVersion")
    if not isinstance(kind, str) or not kind:
        raise fail("object has no kind")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise fail(f"{kind} has no metadata.name")
    namespace = meta.get("namespace")
    if kind in CLUSTER_SCOPED_KINDS or kind in environment.cluster_scoped_kinds:
        if not environment.allow_cluster_scoped:
            raise fail(
                f"{kind}/{meta['name']} is cluster-scoped; environment {environment.name} does not allow "
                "cluster-scoped objects (set allowClusterScoped: true in env.yaml)"
            )
        if namespace:
            raise fail(f"{kind}/{meta['name']} is cluster-scoped and must not set metadata.namespace")
        if kind == "Namespace" and api_version == "v1" and meta["name"] not in _own_namespaces(environment):
            # owning a Namespace is owning all in it: prune would delete another environment's (or kube-system)
            raise fail(
                f"Namespace/{meta['name']} is not environment {environment.name}'s: an environment declares only its "
                f"namespace {environment.namespace!r} or one of its allowedNamespaces"
            )
    elif not namespace:
        meta["namespace"] = environment.namespace
    elif namespace != environment.namespace and namespace not in environment.allowed_namespaces:
        raise fail(
            f"{kind}/{meta['name']} is in namespace {namespace!r}, outside environment {environment.name}'s "
            f"namespace {environment.namespace!r} (list it in env.yaml allowedNamespaces to allow it)"
        )
    problem = _annotation_problem(meta.get("annotations"))
    if problem:
        raise fail(f"{kind}/{meta['name']}: {problem}")
    if kind == "Secret" and api_version == "v1":
        for field in ("data", "stringData"):
            if body.get(field) is not None and not isinstance(body[field], dict):
                # never quoted: its value is the secret, and masking (diffs, error scrubbing) goes key by key
                raise fail(f"Secret/{meta['name']}: {field} must be a mapping of keys to values")
    for field in SERVER_OWNED_METADATA:
        meta.pop(field, None)
    labels = meta.get("labels")
    if labels is None:
        labels = meta["labels"] = {}
    elif not isinstance(labels, dict):
        raise fail(f"{kind}/{meta['name']}: metadata.labels must be a mapping")
    if LABEL_STATE in labels:
        raise fail(f"{kind}/{meta['name']}: label {LABEL_STATE} is reserved for gitsync's own state records")
    labels.update(environment.labels)
    labels[LABEL_MANAGED_BY] = MANAGER
    labels[LABEL_APP] = app
    labels[LABEL_ENV] = environment.name
    try:
        text = canonical(body)
    except (TypeError, ValueError) as exc:
        raise fail(f"{kind}/{meta['name']}: value cannot be sent to Kubernetes as JSON: {exc}") from None
    ref = ObjectId.of(body)
    if is_record(ref):
        raise fail(
            f"{ref}: ConfigMap names starting with {RECORD_PREFIX!r} are reserved for gitsync's own state records "
            "(status, inventory, history, rollout); rename it"
        )
    return Manifest(ref, body, f"{path}:{line}", fingerprint(text))


def _own_namespaces(environment: Environment) -> frozenset[str]:
    return frozenset((environment.namespace, *environment.allowed_namespaces))


_SWITCHES = (ANNOTATION_PRUNE, ANNOTATION_RECREATE, ANNOTATION_FORCE)
"""gitsync's yes/no annotations: a value that is neither "true" nor "false" (``"no"``, ``False`` unquoted) would
otherwise be read as the default, silently: an object meant to be kept would be pruned."""


def _annotation_problem(annotations: object) -> str:
    """What is wrong with the object's ``gitsync.dev/*`` annotations, or ""; the sync engine reads them later,
    where a bad value would fail one object mid-sync (a wave) or be ignored (the others)."""
    if not isinstance(annotations, dict):
        return ""  # not ours to judge: the API server refuses annotations that are not a map of strings
    wave = annotations.get(ANNOTATION_WAVE)
    if wave is not None and not (isinstance(wave, str) and re.fullmatch(r"\s*[+-]?\d+\s*", wave)):
        return f'annotation {ANNOTATION_WAVE} must be a quoted integer like "1", got {wave!r}'
    for name in _SWITCHES:
        value = annotations.get(name)
        if value is not None and value not in ("true", "false"):
            return f'annotation {name} must be "true" or "false", got {value!r}'
    ignore = annotations.get(ANNOTATION_IGNORE)
    if ignore is not None:
        if not isinstance(ignore, str):
            return f"annotation {ANNOTATION_IGNORE} must be a string of JSON pointers, got {ignore!r}"
        for pointer in split_pointers(ignore):
            if not pointer.startswith("/"):
                return (
                    f"annotation {ANNOTATION_IGNORE}: {pointer!r} is not a JSON pointer "
                    "(comma-separated, like /spec/replicas, /data/key)"
                )
    return ""


def check_unique(manifests: Iterable[Manifest]) -> None:
    """Two documents for one object would make the result depend on order: refuse, pointing at both."""
    seen: dict[ObjectId, Manifest] = {}
    for manifest in manifests:
        first = seen.setdefault(manifest.id, manifest)
        if first is not manifest:
            path, _, line = manifest.source.rpartition(":")
            raise RenderError(path, f"duplicate object {manifest.id} (first defined at {first.source})", int(line))


def ordered(manifests: Iterable[Manifest]) -> tuple[Manifest, ...]:
    return tuple(sorted(manifests, key=lambda m: apply_order(m.id)))
