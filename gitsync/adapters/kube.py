"""The Kubernetes API as plain dicts: ``KubeCluster`` implements ``ports.Cluster`` and ``ports.LiveReader``.

A kubeconfig with static credentials (client certificate, bearer token) is read here; everything else (in-cluster
service account, exec plugins, auth providers and their token refresh, proxies, merged kubeconfig lists) goes
through the official ``kubernetes`` client, imported only then: the import alone takes ~0.15 s, a third of a
no-op ``gitsync diff``. Requests and responses are raw JSON over urllib3: typed models are ~20x slower to build
and silently drop fields the client does not know, which would hide drift.

Contract:
- every error is a ``gitsync.errors.KubeError`` subclass whose message starts with the object's ``ObjectId``;
  terminal (conflict, invalid, forbidden, not found) or transient (network, 429, 5xx with Retry-After);
- discovery (kind -> resource) is read once, lazily, and refreshed when a kind is unknown (a CRD just created):
  at once on a kind's first miss, then at most once a second;
- ``requests`` counts API calls by verb, so tests and the benchmark can prove a no-op reconcile writes nothing;
- ``on_write`` listeners get what every write returned (None for a delete), so a watch cache is current at once;
- credentials never reach a log line or an error message.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from gitsync.adapters.kubeconfig import client_connection, static_connection
from gitsync.errors import (
    TERMINATING,
    FieldConflictError,
    ForbiddenError,
    InvalidObjectError,
    KindNotServedError,
    KubeError,
    NamespaceTerminatingError,
    NotFoundError,
    StaleError,
    UnavailableError,
    UnreachableError,
    UntrustedServerError,
    WatchExpired,
)
from gitsync.model import MANAGER, Json, ObjectId
from gitsync.ports import ObjectList, WatchEvent, WatchEventType
from gitsync.redact import scrub, secret_values

__all__ = ["KubeCluster", "Resource"]

_APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# Aggregated discovery (GA in 1.30): every group, version and resource in two requests instead of one per group.
_DISCOVERY_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
_METADATA_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_LIST_PAGE = 500
_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]+)"')
_FIELD_MANAGER_CONFLICT = "FieldManagerConflict"
"""The cause a server-side apply's 409 lists per field another manager owns. A 409 without one is a failed
precondition (a ``resourceVersion`` or ``uid`` in the body that is not the stored object's): ``StaleError``."""
_REFRESH_INTERVAL = 1.0
"""Seconds between discovery refreshes triggered by a kind already found unknown, so a typo in a kind does not
hammer /apis."""
_TYPED_PATCH = "failed to create typed patch object"
"""What server-side apply answers, with HTTP 500, for a body that does not fit the schema (a number where a string
belongs, a field not declared): a content error, not a server fault."""


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind is served: its REST collection and whether objects live in a namespace."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "", version: str = "") -> str:
        """The URL path of the collection (no name) or of one object; ``version`` overrides the preferred one."""
        gv = f"{self.group}/{version or self.version}" if self.group else (version or self.version)
        base = f"/apis/{gv}" if self.group else f"/api/{gv}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return f"{base}/{quote(name, safe='')}" if name else base


class KubeCluster:
    """One connection pool to one API server, shared by every thread of the agent (the pool is thread-safe)."""

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        *,
        context: str | None = None,
        pool_size: int = 32,
        timeout: float = 30.0,
        name: str = "",
    ) -> None:
        """``kubeconfig`` None means the in-cluster service account, or ``$KUBECONFIG``/``~/.kube/config`` outside.

        ``name``: the cluster's name in the agent's ``clusters``, put in front of the server in errors.

        ``pool_size`` must cover the apply concurrency plus the watches the agent keeps open, or requests queue
        behind each other on a connection.
        """
        in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        connection = None if in_cluster else static_connection(kubeconfig, context, pool_size)
        if connection is None:
            connection = client_connection(kubeconfig, context, pool_size, in_cluster)
        self._connection = connection
        self.name = name
        self._timeout = timeout
        self._resources: dict[tuple[str, str], Resource] = {}
        self._discovered_at = float("-inf")
        self._missing: set[tuple[str, str]] = set()
        """Kinds found unknown since the last discovery: a kind's first miss refreshes at once (a CRD another app
        just installed), a repeated miss at most every ``_REFRESH_INTERVAL``."""
        self._discovery_lock = threading.Lock()
        self._counter: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._write_listeners: list[Callable[[ObjectId, Json | None], None]] = []

    @property
    def server(self) -> str:
        return self._connection.host

    # -- request counting ------------------------------------------------------------------------------------

    @property
    def requests(self) -> dict[str, int]:
        """API requests made so far by verb (get, list, watch, apply, dry-run, delete, create, update, discovery)."""
        with self._counter_lock:
            return dict(self._counter)

    def _count(self, verb: str) -> None:
        with self._counter_lock:
            self._counter[verb] += 1

    def on_write(self, listener: Callable[[ObjectId, Json | None], None]) -> None:
        """Call ``listener`` with the object every apply, create or update returned, and None after a delete."""
        self._write_listeners.append(listener)

    def _wrote(self, ref: ObjectId, obj: Json | None) -> None:
        for listener in self._write_listeners:
            listener(ref, obj)

    # -- transport ------------------------------------------------------------------------------------------

    def _headers(self, content_type: str = "", accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": f"{MANAGER}/kube"}
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(self._connection.credentials())
        return headers

    def _request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        subject: str,
        query: Mapping[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        stream: bool = False,
        timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One HTTP request; non-2xx statuses become ``KubeError``s. The caller reads (and closes) a stream."""
        self._count(verb)
        url = self._connection.host + path + (f"?{urlencode(query)}" if query else "")

        def send() -> urllib3.BaseHTTPResponse:
            return self._connection.pool.request(
                method,
                url,
                body=json.dumps(body).encode() if body is not None else None,
                headers=self._headers(content_type if body is not None else "", accept),
                timeout=urllib3.Timeout(connect=10.0, read=timeout or self._timeout),
                preload_content=not stream,
                retries=False,
            )

        try:
            try:
                resp = send()
            except urllib3.exceptions.ProtocolError:
                # A kept-alive connection the server closed without an answer (an API server shutting down for a
                # restart or an upgrade, or closing it idle as the request went out) says nothing about the
                # server: a GET goes once more, on a new connection, as client-go retries a GET on a reset. Not a
                # write, which may have been applied.
                if method != "GET":
                    raise
                resp = send()
        except urllib3.exceptions.HTTPError as e:
            # The server is named: a TLS error (wrong CA) says nothing about where it went.
            host = f"cluster {self.name} at {self._connection.host}" if self.name else self._connection.host
            text = f"{subject}: {method} {host} failed: {type(e).__name__}: {e}"
            if isinstance(e, urllib3.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise UntrustedServerError(text) from e
            if isinstance(e, urllib3.exceptions.ReadTimeoutError):  # it answered the connection: slow, not away
                raise UnavailableError(text) from e
            raise UnreachableError(text) from e
        if resp.status >= 300:
            data = resp.read() if stream else resp.data
            if stream:
                resp.release_conn()
            # The server may quote a refused value: a Secret's never reaches a message (gitsync.redact).
            data = scrub(data.decode(errors="replace"), secret_values(body)).encode()
            raise _error(subject, method, resp.status, data, resp.headers.get("Retry-After"))
        return resp

    def _json(self, verb: str, method: str, path: str, *, subject: str, **kwargs: Any) -> Json:
        resp = self._request(verb, method, path, subject=subject, **kwargs)
        result: Json = json.loads(resp.data)
        return result

    # -- discovery ------------------------------------------------------------------------------------------

    def resource(self, group: str, kind: str) -> Resource:
        """The preferred-version resource serving ``group``/``kind``; refreshes discovery once when unknown."""
        found = self._resources.get((group, kind))
        if found is not None:
            return found
        with self._discovery_lock:
            found = self._resources.get((group, kind))
            missed_before = (group, kind) in self._missing
            if found is None and (not missed_before or time.monotonic() - self._discovered_at >= _REFRESH_INTERVAL):
                self._resources = self._discover()
                self._discovered_at = time.monotonic()
                self._missing.clear()
                found = self._resources.get((group, kind))
            if found is None:
                self._missing.add((group, kind))
        if found is None:
            kind_text = f"{kind}.{group}" if group else kind
            raise KindNotServedError(f"{kind_text}: kind is not served by the API server (is its CRD installed?)")
        return found

    def _discover(self) -> dict[tuple[str, str], Resource]:
        resources: dict[tuple[str, str], Resource] = {}
        for path in ("/api", "/apis"):
            doc = self._json("discovery", "GET", path, subject=path, accept=_DISCOVERY_ACCEPT)
            if doc.get("kind") == "APIGroupDiscoveryList":
                _read_aggregated(doc, resources)
            else:
                self._read_legacy(path, doc, resources)
        return resources

    def _read_legacy(self, path: str, doc: Json, out: dict[tuple[str, str], Resource]) -> None:
        """Discovery from servers older than 1.30: one request per preferred group version."""
        if path == "/api":
            gvs = [("", v) for v in doc.get("versions", [])[:1]]
        else:
            gvs = [(g["name"], g["preferredVersion"]["version"]) for g in doc.get("groups", [])]
        for group, version in gvs:
            gv_path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            listing = self._json("discovery", "GET", gv_path, subject=gv_path)
            for r in listing.get("resources", []):
                if "/" not in r["name"]:
                    out.setdefault((group, r["kind"]), Resource(group, version, r["kind"], r["name"], r["namespaced"]))

    # -- ports.Cluster --------------------------------------------------------------------------------------

    def get(self, ref: ObjectId) -> Json | None:
        res = self.resource(ref.group, ref.kind)
        try:
            return self._json("get", "GET", res.path(ref.namespace, ref.name), subject=str(ref))
        except NotFoundError:
            return None

    def list(
        self, group: str, kind: str, namespace: str = "", label_selector: str = "", *, metadata_only: bool = False
    ) -> ObjectList:
        """All objects of a kind (in one namespace, or all), paged; items carry ``apiVersion`` and ``kind``.

        ``metadata_only`` asks for ``PartialObjectMetadata`` items (what ``kubectl get -o name`` and informers on
        metadata use): names and resourceVersions without spec and status, a third of the bytes of Deployments.
        """
        res = self.resource(group, kind)
        verb, accept = ("list-metadata", _METADATA_LIST_ACCEPT) if metadata_only else ("list", "application/json")
        path = res.path(namespace)
        query = {"limit": str(_LIST_PAGE)}
        if label_selector:
            query["labelSelector"] = label_selector
        api_version = f"{group}/{res.version}" if group else res.version
        items: list[Json] = []
        while True:
            page = self._json(verb, "GET", path, subject=path, query=query, accept=accept)
            for item in page.get("items") or ():  # a metadata list with no items has "items": null
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                return ObjectList(tuple(items), str(page.get("metadata", {}).get("resourceVersion", "")))
            query = {**query, "continue": cont}

    def apply(self, body: Json, *, dry_run: bool = False, force: bool = False, manager: str = MANAGER) -> Json:
        """Server-side apply as field manager ``gitsync`` (or ``manager``); ``force`` takes over fields other
        managers own."""
        ref = ObjectId.of(body)
        res = self.resource(ref.group, ref.kind)
        self._check_scope(ref, res)
        query = {"fieldManager": manager}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        version = str(body.get("apiVersion", "")).rpartition("/")[2]
        path = res.path(ref.namespace, ref.name, version)
        applied = self._json(
            "dry-run" if dry_run else "apply",
            "PATCH",
            path,
            subject=str(ref),
            query=query,
            body=body,
            content_type=_APPLY_CONTENT_TYPE,
        )
        if not dry_run:
            self._wrote(ref, applied)
        return applied

    def delete(self, ref: ObjectId, *, propagation: str = "Background") -> bool:
        res = self.resource(ref.group, ref.kind)
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self._request("delete", "DELETE", res.path(ref.namespace, ref.name), subject=str(ref), body=options)
        except NotFoundError:
            self._wrote(ref, None)
            return False
        self._wrote(ref, None)
        return True

    def create(self, body: Json, *, dry_run: bool = False) -> Json:
        """POST a new object; ``StaleError`` (transient) when it already exists. ``dry_run`` validates and admits
        without storing, and answers ``StaleError`` only after the object passed validation and admission; it
        refuses unknown fields (``fieldValidation=Strict``) as the server-side apply of the same body would."""
        ref = ObjectId.of(body)
        res = self.resource(ref.group, ref.kind)
        self._check_scope(ref, res)
        query = {"dryRun": "All", "fieldValidation": "Strict"} if dry_run else {}
        verb = "dry-run-create" if dry_run else "create"
        created = self._json(verb, "POST", res.path(ref.namespace), subject=str(ref), body=body, query=query)
        if not dry_run:
            self._wrote(ref, created)
        return created

    def replace(self, body: Json) -> Json:
        """PUT an object; with ``metadata.resourceVersion`` set, ``StaleError`` when someone wrote in between."""
        ref = ObjectId.of(body)
        res = self.resource(ref.group, ref.kind)
        updated = self._json("update", "PUT", res.path(ref.namespace, ref.name), subject=str(ref), body=body)
        self._wrote(ref, updated)
        return updated

    def watch(
        self,
        group: str,
        kind: str,
        namespace: str = "",
        label_selector: str = "",
        resource_version: str = "",
        timeout_seconds: int = 300,
    ) -> Iterator[WatchEvent]:
        """Events after ``resource_version`` for up to ``timeout_seconds``, BOOKMARKs included.

        The resourceVersion is tracked here from every event (bookmarks too) and the stream is reopened from it
        when the server ends it early, so a caller sees one uninterrupted stream. A 410 raises ``WatchExpired``:
        list again and watch from the list's resourceVersion.
        """
        res = self.resource(group, kind)
        path = res.path(namespace)
        api_version = f"{group}/{res.version}" if group else res.version
        rv = resource_version
        deadline = time.monotonic() + timeout_seconds
        while (remaining := int(deadline - time.monotonic())) > 0:
            query = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": str(remaining)}
            if label_selector:
                query["labelSelector"] = label_selector
            if rv:
                query["resourceVersion"] = rv
            resp = self._request("watch", "GET", path, subject=path, query=query, stream=True, timeout=remaining + 10)
            finished = False
            try:
                for line in _lines(resp):
                    event = json.loads(line)
                    obj: Json = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        code = int(obj.get("code", 0))
                        raise _error(path, "WATCH", code, json.dumps(obj).encode(), None)
                    rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                    obj.setdefault("apiVersion", api_version)
                    obj.setdefault("kind", kind)
                    yield WatchEvent(WatchEventType(event["type"]), obj)
                finished = True
            except urllib3.exceptions.HTTPError as e:
                raise UnavailableError(f"{path}: watch interrupted: {type(e).__name__}") from e
            finally:
                # A watch left early (caller stopped, error event) still has a body in flight: close the socket
                # rather than hand a half-read connection back to the pool.
                if not finished:
                    resp.close()
                resp.release_conn()

    # -- helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def _check_scope(ref: ObjectId, res: Resource) -> None:
        if res.namespaced and not ref.namespace:
            raise InvalidObjectError(f"{ref}: {ref.kind} is namespaced but metadata.namespace is empty")
        if not res.namespaced and ref.namespace:
            raise InvalidObjectError(f"{ref}: {ref.kind} is cluster-scoped but metadata.namespace is set")


def _read_aggregated(doc: Json, out: dict[tuple[str, str], Resource]) -> None:
    for group_doc in doc.get("items", []):
        group = group_doc.get("metadata", {}).get("name", "")
        # Versions are listed in preference order; the first version serving a kind wins.
        for version_doc in group_doc.get("versions", []):
            version = version_doc["version"]
            for r in version_doc.get("resources", []):
                kind = r.get("responseKind", {}).get("kind")
                if kind:
                    key = (group, kind)
                    if key not in out:
                        out[key] = Resource(group, version, kind, r["resource"], r.get("scope") == "Namespaced")


def _lines(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Newline-delimited JSON from a watch stream, as the bytes arrive."""
    buf = b""
    for chunk in resp.stream(64 * 1024, decode_content=True):
        buf += chunk
        *complete, buf = buf.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buf.strip():
        yield buf


def _error(subject: str, method: str, status: int, data: bytes, retry_after: str | None) -> KubeError:
    """Map an API ``Status`` to the error taxonomy; the server's message is kept, credentials never appear in it."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    message = str(doc.get("message") or data[:200].decode(errors="replace").strip() or f"HTTP {status}")
    reason = str(doc.get("reason", ""))
    causes = (doc.get("details") or {}).get("causes") or []
    fields = tuple(str(c["field"]) for c in causes if c.get("field"))
    if status == 409 and method == "PATCH" and any(c.get("reason") == _FIELD_MANAGER_CONFLICT for c in causes):
        managers = tuple(dict.fromkeys(m for c in causes for m in _CONFLICT_MANAGER.findall(str(c.get("message", "")))))
        owners = ", ".join(managers) or "another field manager"
        return FieldConflictError(
            f"{subject}: conflict: fields {', '.join(fields) or '?'} are owned by {owners}"
            f' (set annotation gitsync.dev/force-conflicts: "true" to take them over)',
            fields=fields,
            managers=managers,
        )
    if status == 409:
        return StaleError(f"{subject}: {reason or 'Conflict'}: {message}")
    if status in (400, 422) or (status == 500 and _TYPED_PATCH in message):
        immutable = "immutable" in message or any("immutable" in str(c.get("message", "")) for c in causes)
        what = "field is immutable" if immutable else "invalid"
        detail = f"{', '.join(fields)} ({message})" if fields else message
        return InvalidObjectError(f"{subject}: {what}: {' '.join(detail.split())}", fields=fields, immutable=immutable)
    if status in (401, 403):
        forbidden = NamespaceTerminatingError if TERMINATING in message else ForbiddenError
        return forbidden(f"{subject}: forbidden: {message}")
    if status == 404:
        return NotFoundError(f"{subject}: not found: {message}")
    if status == 410:
        return WatchExpired(f"{subject}: resourceVersion expired: {message}")
    if status == 429 or status >= 500:
        delay = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        return UnavailableError(f"{subject}: {method} returned HTTP {status}: {message}", retry_after=delay)
    return InvalidObjectError(f"{subject}: {method} returned HTTP {status}: {message}")
