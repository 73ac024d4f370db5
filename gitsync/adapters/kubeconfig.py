"""How ``KubeCluster`` reaches the API server from a kubeconfig (``gitsync.adapters.kube``).

A kubeconfig with static credentials (client certificate, bearer token) and plain TLS is read here, without the
official client; anything else (in-cluster service account, exec plugins, auth providers and their token refresh,
proxies, merged kubeconfig lists) goes through the ``kubernetes`` package, imported only then (~0.15 s).
Credentials never reach a log line or an error message.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from urllib3.util.ssl_ import create_urllib3_context

from gitsync.errors import TerminalError
from gitsync.model import Json

__all__ = ["Connection", "client_connection", "static_connection"]

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader: a kubeconfig with inline certificates is parsed in a tenth of the pure-Python time."""
_STATIC_CLUSTER_KEYS = frozenset(
    {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify", "tls-server-name"}
)
_STATIC_USER_KEYS = frozenset(
    {"client-certificate", "client-certificate-data", "client-key", "client-key-data", "token", "tokenFile"}
)
"""What a kubeconfig may hold for ``KubeCluster`` to read it without the client: static credentials, plain TLS."""


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the API server: its base URL, a pool with the TLS settings, the current credential headers."""

    host: str
    pool: urllib3.PoolManager
    credentials: Callable[[], dict[str, str]]


def static_connection(kubeconfig: str | Path | None, context: str | None, pool_size: int) -> Connection | None:
    """A connection from a kubeconfig file whose user has only a client certificate and/or a bearer token, and whose
    cluster is plain HTTPS; None for anything else, which ``client_connection`` handles (and reports)."""
    name = str(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG", "")
    if os.pathsep in name:
        return None  # a list of files to merge
    path = Path(name or "~/.kube/config").expanduser()
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 (a safe loader)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    ctx = _named(doc, "contexts", "context", context or doc.get("current-context"))
    cluster = _named(doc, "clusters", "cluster", ctx.get("cluster")) if ctx else None
    user = _named(doc, "users", "user", ctx.get("user")) if ctx else None
    if (
        cluster is None
        or user is None
        or not set(cluster) <= _STATIC_CLUSTER_KEYS
        or not set(user) <= _STATIC_USER_KEYS
    ):
        return None
    server = cluster.get("server")
    has_cert = not user.keys().isdisjoint({"client-certificate", "client-certificate-data"})
    has_key = not user.keys().isdisjoint({"client-key", "client-key-data"})
    if not isinstance(server, str) or not server.startswith("https://") or has_cert != has_key:
        return None
    base = path.absolute().parent
    try:
        tls = _tls_context(cluster, user, base)
        token = _material(user, "tokenFile", "token", base, encoded=False).decode().strip()
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError; bad base64 or UTF-8 a ValueError
        raise TerminalError(f"{path}: cannot load cluster configuration: {e}") from e
    headers = {"authorization": f"Bearer {token}"} if token else {}
    pool_args: dict[str, Any] = {"ssl_context": tls, "maxsize": pool_size}
    if cluster.get("tls-server-name"):
        pool_args["server_hostname"] = str(cluster["tls-server-name"])
    return Connection(server.rstrip("/"), urllib3.PoolManager(**pool_args), lambda: dict(headers))


def _named(doc: Json, section: str, key: str, name: Any) -> dict[str, Any] | None:
    """The ``key`` mapping of the entry called ``name`` in a kubeconfig list (``clusters``, ``users``, ``contexts``)."""
    for entry in doc.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key) or {}
            return value if isinstance(value, dict) else None
    return None


def _material(entry: Mapping[str, Any], file_key: str, data_key: str, base: Path, *, encoded: bool = True) -> bytes:
    """A credential's bytes: the inline value (base64 when ``encoded``) wins over the file, as in the client."""
    if entry.get(data_key):
        value = str(entry[data_key])
        return base64.b64decode(value, validate=True) if encoded else value.encode()
    if entry.get(file_key):
        return (base / str(entry[file_key])).read_bytes()
    return b""


def _tls_context(cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path) -> ssl.SSLContext:
    """Server verification and client certificate, loaded once; key material touches the disk only while loading
    (``load_cert_chain`` reads files), in a private temporary directory."""
    verify = not cluster.get("insecure-skip-tls-verify", False)
    tls = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    if verify:
        ca = _material(cluster, "certificate-authority", "certificate-authority-data", base)
        if ca:
            tls.load_verify_locations(cadata=ca.decode())
        else:
            tls.load_default_certs()
    cert = _material(user, "client-certificate", "client-certificate-data", base)
    if cert:
        key = _material(user, "client-key", "client-key-data", base)
        with tempfile.TemporaryDirectory(prefix="gitsync-tls-") as private:  # mode 0700
            cert_file, key_file = Path(private, "tls.crt"), Path(private, "tls.key")
            cert_file.write_bytes(cert)
            key_file.write_bytes(key)
            tls.load_cert_chain(cert_file, key_file)
    return tls


def _lookup_exists() -> bool:
    """Whether the usual kubeconfig lookup names a file that exists (``$KUBECONFIG``'s files, else
    ``~/.kube/config``): without one, the client's own message ("Invalid kube-config file. No configuration
    found.") does not tell a newcomer what to do."""
    names = [n for n in os.environ.get("KUBECONFIG", "").split(os.pathsep) if n] or ["~/.kube/config"]
    return any(Path(n).expanduser().is_file() for n in names)


def client_connection(
    kubeconfig: str | Path | None, context: str | None, pool_size: int, in_cluster: bool
) -> Connection:
    """A connection configured by the official client, which also refreshes expiring credentials: the headers are
    asked for on every request (an exec plugin runs again, a rotated service-account token is re-read)."""
    from kubernetes.client import configuration, rest
    from kubernetes.config import incluster_config, kube_config
    from kubernetes.config.config_exception import ConfigException

    cfg = configuration.Configuration()
    try:
        if in_cluster:
            incluster_config.load_incluster_config(client_configuration=cfg)
        else:
            kube_config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError) as e:  # bad base64 in a *-data field is a ValueError
        if kubeconfig is None and not in_cluster and not _lookup_exists():
            raise TerminalError(
                "kubeconfig: none found ($KUBECONFIG unset or naming no file, no ~/.kube/config, and not in a pod): "
                "pass --kubeconfig FILE or set KUBECONFIG"
            ) from e
        raise TerminalError(f"{kubeconfig or 'kubeconfig'}: cannot load cluster configuration: {e}") from e
    cfg.connection_pool_maxsize = pool_size
    pool: urllib3.PoolManager = rest.RESTClientObject(cfg).pool_manager

    def credentials() -> dict[str, str]:
        auth = cfg.auth_settings().get("BearerToken")
        return {auth["key"]: str(auth["value"])} if auth and auth["value"] else {}

    return Connection(str(cfg.host), pool, credentials)
