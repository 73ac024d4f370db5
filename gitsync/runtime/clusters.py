"""The clusters one agent applies to: its home cluster and any named target clusters, each with its own client.

An environment names its cluster in its ``env.yaml`` (``cluster: prod-eu`` or ``cluster: {kubeconfigSecret:
secret/key}``) or in the agent's ``environments`` list; the agent's ``clusters`` entry of that name says where the
credentials are (a kubeconfig file, a Secret in the agent's namespace, or ``home: true``) and wins over the
``env.yaml``'s Secret, so one repository serves one agent per cluster as well as one agent for several.

Contract:
- each target cluster is connected once, on first use: its own ``KubeCluster`` (connection pool), its own
  ``WatchCache`` and its own rollout executor, made by the ``connect`` callable the caller composes;
- credentials that cannot be read (a Secret or key missing, not a kubeconfig) raise a ``TerminalError`` naming
  the cluster and where the credentials were looked for, never their content; the next reconcile tries again
  (the Secret may be created later);
- a kubeconfig read from a Secret touches the disk only while it is loaded, in a private temporary directory;
- the agent's own records (status, history, inventory, rollout state: the ``StateStore``) and its Leases stay in
  the home cluster, so a target cluster that is down still gets its status written, and a restarted agent finds
  everything it needs where it runs.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gitsync.cache import WatchCache
from gitsync.errors import GitsyncError, TerminalError
from gitsync.model import Json, ObjectId
from gitsync.ports import Cluster, Rollouts
from gitsync.runtime.config import ClusterConfig

__all__ = ["HOME", "Clusters", "Connected", "SecretReader"]

HOME = ""
"""The name of the agent's home cluster (an environment that names no cluster)."""


class SecretReader(Protocol):
    def get(self, ref: ObjectId) -> Json | None: ...


@dataclass(frozen=True, slots=True)
class Connected:
    """One cluster as the agent uses it: the client, its watch cache (None: drift watching off) and rollouts."""

    name: str
    cluster: Cluster
    cache: WatchCache | None
    rollouts: Rollouts | None


Connect = Callable[[str, Path], Connected]
"""(cluster name, kubeconfig file) -> the connected cluster; the file may be deleted once this returns."""


class Clusters:
    """Named target clusters, connected on first use and kept for the life of the agent."""

    def __init__(
        self,
        home: Connected,
        secrets: SecretReader,
        namespace: str,
        configured: Mapping[str, ClusterConfig],
        connect: Connect,
    ) -> None:
        """``secrets``: the home cluster, where ``kubeconfigSecret``s are read (in ``namespace``, the agent's)."""
        self.home = home
        self._secrets = secrets
        self._namespace = namespace
        self._configured = dict(configured)
        self._connect = connect
        self._connected: dict[str, Connected] = {HOME: home}
        self._lock = threading.Lock()

    def connected(self) -> list[Connected]:
        with self._lock:
            return list(self._connected.values())

    def get(self, name: str, secret: str = "") -> Connected:
        """The cluster called ``name`` (``HOME``: the agent's own); ``secret`` is the ``env.yaml``'s
        ``kubeconfigSecret``, used when the agent's ``clusters`` does not define ``name``."""
        with self._lock:
            found = self._connected.get(name)
            if found is not None:
                return found
            found = self._open(name, secret)
            self._connected[name] = found
            return found

    def _open(self, name: str, secret: str) -> Connected:
        config = self._configured.get(name)
        if config is not None and config.home:
            return Connected(name, self.home.cluster, self.home.cache, self.home.rollouts)
        if config is not None and config.kubeconfig_file is not None:
            if not config.kubeconfig_file.is_file():
                raise TerminalError(f"cluster {name}: kubeconfig file {config.kubeconfig_file} does not exist")
            return self._connected_from(name, config.kubeconfig_file, str(config.kubeconfig_file))
        secret = config.kubeconfig_secret if config is not None else secret
        if not secret:
            raise TerminalError(
                f"cluster {name}: not defined in the agent's clusters, and its env.yaml gives no kubeconfigSecret"
            )
        return self._from_secret(name, secret)

    def _from_secret(self, name: str, secret: str) -> Connected:
        secret_name, _, key = secret.partition("/")
        where = f"Secret {self._namespace}/{secret_name} key {key}"
        found = self._secrets.get(ObjectId("", "Secret", self._namespace, secret_name))
        if found is None:
            raise TerminalError(f"cluster {name}: kubeconfig {where}: the Secret does not exist")
        encoded = (found.get("data") or {}).get(key)
        if not encoded:
            raise TerminalError(f"cluster {name}: kubeconfig {where}: the Secret has no such key")
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise TerminalError(f"cluster {name}: kubeconfig {where}: not base64") from None
        with tempfile.TemporaryDirectory(prefix="gitsync-kubeconfig-") as private:  # mode 0700
            path = Path(private, "kubeconfig")
            path.write_bytes(content)
            path.chmod(0o600)
            return self._connected_from(name, path, where)

    def _connected_from(self, name: str, path: Path, where: str) -> Connected:
        try:
            return self._connect(name, path)
        except GitsyncError as e:
            # The loaders' messages name the file and the problem, never a credential.
            raise TerminalError(f"cluster {name}: kubeconfig {where}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the client's loaders raise assorted errors on a malformed file
            problem = f"not a usable kubeconfig ({type(e).__name__})"
            raise TerminalError(f"cluster {name}: kubeconfig {where}: {problem}") from None
