"""The agent's configuration: ``agent.yaml`` plus ``GITSYNC_*`` environment overrides, as a typed frozen tree.

Contract: pure apart from reading the one config file. Every error names the file, the line and the field
(``agent.yaml:7: pollInterval: expected a duration like 30s``) so an operator fixes it without guessing.
Secrets are never part of the config: it holds only the *paths* of files mounted from Secrets.

Example::

    repo:
      url: https://git.example.com/org/deploy.git
      branch: main
      auth: {tokenFile: /etc/gitsync/token}          # or {sshKeyFile: ..., knownHostsFile: ...}
      verify: {allowedSignersFile: /etc/gitsync/allowed_signers}   # and/or gpgKeyring: ...
      write: {authorName: gitsync, authorEmail: gitsync@example.com, signingKeyFile: /etc/gitsync/signing-key}
    environments:
      - name: staging                 # every app of the environment
      - {name: prod, apps: [podinfo]}
    pollInterval: 30s
    webhooks: {github: {secretFile: /etc/gitsync/webhook-secret}}
    forge: {kind: github, url: https://github.com, repo: org/deploy, tokenFile: /etc/gitsync/forge-token}
    notifications:                    # docs/notifications.md
      - {name: ops, url: https://hooks.example.com/gitsync, secretFile: /etc/gitsync/notify-key}
      - {name: team, format: slack, urlFile: /etc/gitsync/slack-url, events: [sync-failed, rollout-aborted]}
    listen: 0.0.0.0:8080
    selfHeal: true
    prune: true
    dashboard: {listen: 0.0.0.0:3100}   # optional: the read-only dashboard, bearer tokens required
    clusters:                         # named target clusters (docs/scale.md); env.yaml or environments[].cluster
      prod-eu: {kubeconfigSecret: prod-eu-kubeconfig/kubeconfig}   # or {kubeconfigFile: ...} or {home: true}
    sharding: {shards: 3}             # every replica works on the app-envs of its shard Leases
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from gitsync.adapters.git import scrub
from gitsync.errors import TerminalError
from gitsync.model import parse_duration
from gitsync.notify import Format, Notice, Receiver
from gitsync.ports import ForgeKind, GitAuth, VerifyConfig, VerifyMode
from renderers.environment import SYSTEM_NAMESPACES


class ConfigError(TerminalError):
    """The agent configuration is invalid; the message is ``file:line: field: problem``."""


class Provider(StrEnum):
    """Webhook senders; each has its own signature scheme (see ``gitsync.runtime.webhooks``)."""

    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    BITBUCKET = "bitbucket"
    """Bitbucket Cloud and Bitbucket Data Center (Server) alike (``gitsync.runtime.bitbucket``)."""
    GENERIC = "generic"


@dataclass(frozen=True, slots=True)
class WriteConfig:
    """What the agent writes to Git with (promotion and rollback commits, the release notes): the push uses the
    read credentials (``repo.auth``), which then need write access."""

    author_name: str = "gitsync"
    author_email: str = "gitsync@noreply.invalid"
    signing_key_file: Path | None = None
    """An SSH private key (mounted from a Secret): commits are signed with it (``gpg.format ssh``), so
    ``repo.verify`` with an allowed-signers file can require signed promotions."""


@dataclass(frozen=True, slots=True)
class ForgeConfig:
    """The forge the repository lives on (``gitsync.adapters.forge``): commit statuses per environment and app,
    the plan comment on pull requests, and the promotion and rollback pull requests go through its API."""

    kind: ForgeKind
    url: str
    repo: str
    """``owner/name`` (GitLab: the project's full path)."""
    token_file: Path
    target_url: str = ""
    """The link every commit status carries (a dashboard); empty: none."""


@dataclass(frozen=True, slots=True)
class RepoConfig:
    url: str
    branch: str = "main"
    auth: GitAuth = field(default_factory=GitAuth)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    write: WriteConfig = field(default_factory=WriteConfig)


@dataclass(frozen=True, slots=True)
class EnvSelection:
    """One environment this agent deploys; ``apps`` empty means every app the environment lists."""

    name: str
    apps: tuple[str, ...] = ()
    cluster: str = ""
    """A name from ``clusters`` the environment is applied to, overriding its ``env.yaml``'s ``cluster``."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Where one named target cluster's credentials come from (``gitsync.runtime.clusters``): a kubeconfig file
    (mounted from a Secret), a Secret in the agent's namespace read through the home cluster (``name/key``), or
    the agent's home cluster itself (``home: true``: the agent per cluster runs there)."""

    name: str
    kubeconfig_file: Path | None = None
    kubeconfig_secret: str = ""
    home: bool = False


@dataclass(frozen=True, slots=True)
class Sharding:
    """``shards`` > 0: every replica works on the app-envs of the shard Leases it holds
    (``gitsync.runtime.shards``); 0: one replica works (alone, or as the elected leader). Set it to the
    Deployment's replicas (``GITSYNC_SHARDS``) or higher; the Leases use ``leaderElection``'s namespace, name
    prefix, identity and timing."""

    shards: int = 0


@dataclass(frozen=True, slots=True)
class LeaderElection:
    """Lease-based leader election. Defaults follow client-go: 15 s lease, renew every 5 s, so a dead
    leader is replaced within about 15 s, and a clean shutdown releases the lease at once."""

    enabled: bool = False
    namespace: str = "gitsync-system"
    lease_name: str = "gitsync-leader"
    identity: str = ""
    lease_duration: float = 15.0
    renew_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    repo: RepoConfig
    environments: tuple[EnvSelection, ...]
    poll_interval: float = 60.0
    """How often the remote head is checked (ls-remote); cheap, since nothing else happens when it did not move."""
    drift_interval: float = 300.0
    """How often every app-env is compared with the cluster even when Git did not move (self-heal or report)."""
    drift_watch: bool = True
    """Watch managed objects and react to an edit within seconds (``gitsync.drift``), besides the drift timer."""
    webhook_secrets: Mapping[Provider, Path] = field(default_factory=dict)
    listen: str = "0.0.0.0:8080"
    self_heal: bool = True
    prune: bool = True
    create_namespaces: bool = True
    """Create an environment's namespace when it does not exist (labelled as gitsync's; never pruned). Needs
    ``create`` on namespaces; turn off with the namespace-scoped RBAC variant."""
    kubeconfig: Path | None = None
    """None: in-cluster service-account credentials."""
    cache_dir: Path = Path("/var/cache/gitsync")
    history_limit: int = 1000
    """Releases kept per app-env (Argo CD keeps 10); ~300 bytes each, so 1000 fits a ConfigMap easily."""
    workers: int = 4
    leader: LeaderElection = field(default_factory=LeaderElection)
    sharding: Sharding = field(default_factory=Sharding)
    clusters: Mapping[str, ClusterConfig] = field(default_factory=dict)
    """Named target clusters; an environment without one is applied to the home cluster (``kubeconfig``)."""
    log_format: str = "auto"
    forge: ForgeConfig | None = None
    notifications: tuple[Receiver, ...] = ()
    """Where notifications go (``gitsync.notify``); the URLs of Slack receivers and every key are file paths."""
    dashboard_listen: str = ""
    """``dashboard: {listen: host:port}``: serve the read-only dashboard there, behind bearer tokens reviewed by
    the API server (``gitsync.dashboard.access``); empty: no dashboard."""
    allow_protected_namespaces: tuple[str, ...] = ()
    """Protected namespaces (the cluster's own, and the agent's) that environments may deploy to nevertheless.
    Only the operator sets this, never the repository; the RBAC must grant them too (deploy/cluster-wide)."""

    @property
    def protected_namespaces(self) -> frozenset[str]:
        """What the renderer refuses (``render_app(..., protected=...)``): kube-system, kube-public,
        kube-node-lease and the agent's own namespace (the leader-election namespace, i.e. ``POD_NAMESPACE``),
        minus ``allow_protected_namespaces``."""
        return (SYSTEM_NAMESPACES | {self.leader.namespace}) - set(self.allow_protected_namespaces)

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)  # noqa: S104 - the agent serves webhooks to the cluster


class _Lines:
    """Line numbers of every key in a YAML document, by dotted path (``repo.url``, ``environments.1.name``)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        self.overrides: dict[str, str] = {}
        """Dotted path -> environment variable that set it, so errors name the variable instead of a line."""
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, path: str) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                self.lines[sub] = key.start_mark.line + 1
                self._walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, f"{path}.{index}" if path else str(index))

    def of(self, path: str) -> int:
        while path and path not in self.lines:
            path = path.rpartition(".")[0]
        return self.lines.get(path, 1)


class _Reader:
    """Typed access to the parsed document that turns every problem into a ``ConfigError`` with file:line."""

    def __init__(self, source: str, lines: _Lines) -> None:
        self.source = source
        self.lines = lines

    def fail(self, path: str, problem: str) -> ConfigError:
        shown = path.rpartition(".")[2] if not path.rpartition(".")[2].isdigit() else path
        variable = self.lines.overrides.get(path)
        where = f"${variable}" if variable else f"{self.source}:{self.lines.of(path)}"
        return ConfigError(f"{where}: {shown or 'config'}: {problem}")

    def mapping(self, data: object, path: str) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise self.fail(path, "expected a mapping")
        return data

    def check_keys(self, data: Mapping[str, Any], path: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                sub = f"{path}.{key}" if path else str(key)
                raise self.fail(sub, f"unknown field (known: {', '.join(sorted(allowed))})")

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.fail(f"{path}.{key}" if path else key, "required")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise self.fail(f"{path}.{key}" if path else key, "expected a string")
        return str(value)

    def opt_path(self, data: Mapping[str, Any], key: str, path: str) -> Path | None:
        value = data.get(key)
        if value is None:
            return None
        return Path(self.string(data, key, path))

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{path}.{key}" if path else key, "expected true or false")
        return value

    def duration(self, data: Mapping[str, Any], key: str, path: str, default: float) -> float:
        full = f"{path}.{key}" if path else key
        try:
            seconds = parse_duration(data.get(key, default))
        except ValueError:
            raise self.fail(full, "expected a duration like 30s") from None
        if seconds <= 0:
            raise self.fail(full, "must be positive")
        return seconds

    def integer(self, data: Mapping[str, Any], key: str, path: str, default: int, minimum: int = 1) -> int:
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(f"{path}.{key}" if path else key, f"expected an integer >= {minimum}")
        return value


_TOP = {
    "repo",
    "environments",
    "pollInterval",
    "driftInterval",
    "driftWatch",
    "webhooks",
    "listen",
    "selfHeal",
    "prune",
    "createNamespaces",
    "kubeconfig",
    "cacheDir",
    "historyLimit",
    "workers",
    "leaderElection",
    "sharding",
    "clusters",
    "logFormat",
    "allowProtectedNamespaces",
    "forge",
    "notifications",
    "dashboard",
}


def _parse(doc: object, r: _Reader) -> AgentConfig:
    top = r.mapping(doc, "")
    r.check_keys(top, "", _TOP)
    repo = r.mapping(top.get("repo"), "repo")
    r.check_keys(repo, "repo", {"url", "branch", "auth", "verify", "write"})
    auth = r.mapping(repo.get("auth"), "repo.auth")
    r.check_keys(auth, "repo.auth", {"sshKeyFile", "knownHostsFile", "tokenFile", "username"})
    git_auth = GitAuth(
        ssh_key_file=r.opt_path(auth, "sshKeyFile", "repo.auth"),
        known_hosts_file=r.opt_path(auth, "knownHostsFile", "repo.auth"),
        token_file=r.opt_path(auth, "tokenFile", "repo.auth"),
        username=r.string(auth, "username", "repo.auth", "x-access-token"),
    )
    if git_auth.ssh_key_file and not git_auth.known_hosts_file:
        raise r.fail("repo.auth.sshKeyFile", "needs knownHostsFile too (host keys are always checked)")
    verify = r.mapping(repo.get("verify"), "repo.verify")
    r.check_keys(verify, "repo.verify", {"allowedSignersFile", "gpgKeyring"})
    signers = r.opt_path(verify, "allowedSignersFile", "repo.verify")
    keyring = r.opt_path(verify, "gpgKeyring", "repo.verify")
    modes = {(True, True): VerifyMode.SSH_OR_GPG, (True, False): VerifyMode.SSH, (False, True): VerifyMode.GPG}
    mode = modes.get((signers is not None, keyring is not None), VerifyMode.NONE)
    branch = r.string(repo, "branch", "repo", "main")
    if branch.startswith("-") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch) or ".." in branch:
        raise r.fail("repo.branch", f"not a valid branch name: {branch!r}")
    write = r.mapping(repo.get("write"), "repo.write")
    r.check_keys(write, "repo.write", {"authorName", "authorEmail", "signingKeyFile"})
    defaults = WriteConfig()
    repo_config = RepoConfig(
        url=r.string(repo, "url", "repo"),
        branch=branch,
        auth=git_auth,
        verify=VerifyConfig(mode, signers, keyring),
        write=WriteConfig(
            author_name=r.string(write, "authorName", "repo.write", defaults.author_name),
            author_email=r.string(write, "authorEmail", "repo.write", defaults.author_email),
            signing_key_file=r.opt_path(write, "signingKeyFile", "repo.write"),
        ),
    )
    if repo_config.url.startswith("-"):
        raise r.fail("repo.url", "must not start with '-'")

    envs_raw = top.get("environments")
    if not isinstance(envs_raw, list) or not envs_raw:
        raise r.fail("environments", "expected a non-empty list")
    envs: list[EnvSelection] = []
    for index, item in enumerate(envs_raw):
        path = f"environments.{index}"
        if isinstance(item, str):
            envs.append(EnvSelection(item))
            continue
        entry = r.mapping(item, path)
        r.check_keys(entry, path, {"name", "apps", "cluster"})
        apps = entry.get("apps") or []
        if not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
            raise r.fail(f"{path}.apps", "expected a list of app names")
        envs.append(EnvSelection(r.string(entry, "name", path), tuple(apps), r.string(entry, "cluster", path, "")))
    clusters = _clusters(top, r)
    for index, selection in enumerate(envs):
        if selection.cluster and selection.cluster not in clusters:
            raise r.fail(f"environments.{index}.cluster", f"{selection.cluster!r} is not defined in clusters")

    hooks = r.mapping(top.get("webhooks"), "webhooks")
    secrets: dict[Provider, Path] = {}
    for name, value in hooks.items():
        try:
            provider = Provider(name)
        except ValueError:
            raise r.fail(f"webhooks.{name}", f"unknown provider (known: {', '.join(Provider)})") from None
        entry = r.mapping(value, f"webhooks.{name}")
        r.check_keys(entry, f"webhooks.{name}", {"secretFile"})
        secrets[provider] = Path(r.string(entry, "secretFile", f"webhooks.{name}"))

    le = r.mapping(top.get("leaderElection"), "leaderElection")
    r.check_keys(
        le, "leaderElection", {"enabled", "namespace", "leaseName", "identity", "leaseDuration", "renewInterval"}
    )
    leader = LeaderElection(
        enabled=r.boolean(le, "enabled", "leaderElection", False),
        namespace=r.string(le, "namespace", "leaderElection", "gitsync-system"),
        lease_name=r.string(le, "leaseName", "leaderElection", "gitsync-leader"),
        identity=r.string(le, "identity", "leaderElection", ""),
        lease_duration=r.duration(le, "leaseDuration", "leaderElection", 15.0),
        renew_interval=r.duration(le, "renewInterval", "leaderElection", 5.0),
    )
    if leader.renew_interval >= leader.lease_duration:
        raise r.fail("leaderElection.renewInterval", "must be shorter than leaseDuration")

    sharding = r.mapping(top.get("sharding"), "sharding")
    r.check_keys(sharding, "sharding", {"shards"})

    listen = r.string(top, "listen", "", "0.0.0.0:8080")
    if not re.fullmatch(r"[^\s:]*:\d{1,5}", listen):
        raise r.fail("listen", "expected host:port like 0.0.0.0:8080")
    allow_protected = top.get("allowProtectedNamespaces") or []
    if not isinstance(allow_protected, list) or not all(isinstance(n, str) and n for n in allow_protected):
        raise r.fail("allowProtectedNamespaces", "expected a list of namespace names")
    dashboard = r.mapping(top.get("dashboard"), "dashboard")
    r.check_keys(dashboard, "dashboard", {"listen"})
    dashboard_on = top.get("dashboard") is not None
    dashboard_listen = r.string(dashboard, "listen", "dashboard", "0.0.0.0:3100") if dashboard_on else ""
    if dashboard_listen and not re.fullmatch(r"[^\s:]*:\d{1,5}", dashboard_listen):
        raise r.fail("dashboard.listen", "expected host:port like 0.0.0.0:3100")
    log_format = r.string(top, "logFormat", "", "auto")
    if log_format not in ("auto", "json", "console"):
        raise r.fail("logFormat", "expected auto, json or console")
    return AgentConfig(
        repo=repo_config,
        environments=tuple(envs),
        poll_interval=r.duration(top, "pollInterval", "", 60.0),
        drift_interval=r.duration(top, "driftInterval", "", 300.0),
        drift_watch=r.boolean(top, "driftWatch", "", True),
        webhook_secrets=secrets,
        listen=listen,
        self_heal=r.boolean(top, "selfHeal", "", True),
        prune=r.boolean(top, "prune", "", True),
        create_namespaces=r.boolean(top, "createNamespaces", "", True),
        kubeconfig=r.opt_path(top, "kubeconfig", ""),
        cache_dir=Path(r.string(top, "cacheDir", "", "/var/cache/gitsync")),
        history_limit=r.integer(top, "historyLimit", "", 1000),
        workers=r.integer(top, "workers", "", 4),
        leader=leader,
        sharding=Sharding(r.integer(sharding, "shards", "sharding", 0, minimum=0)),
        clusters=clusters,
        log_format=log_format,
        forge=_forge(top, r),
        allow_protected_namespaces=tuple(allow_protected),
        notifications=_receivers(top.get("notifications"), r),
        dashboard_listen=dashboard_listen,
    )


def _forge(top: Mapping[str, Any], r: _Reader) -> ForgeConfig | None:
    if top.get("forge") is None:
        return None
    forge = r.mapping(top.get("forge"), "forge")
    r.check_keys(forge, "forge", {"kind", "url", "repo", "tokenFile", "targetUrl"})
    kind = r.string(forge, "kind", "forge")
    if kind not in set(ForgeKind):
        raise r.fail("forge.kind", f"unknown forge {kind!r} (known: {', '.join(ForgeKind)})")
    url = r.string(forge, "url", "forge", "https://github.com" if kind == ForgeKind.GITHUB else None)
    if not re.fullmatch(r"https?://[^\s/@]+(/[^\s@]*)?", url):
        raise r.fail(
            "forge.url",
            f"expected an http(s) URL without credentials, like https://gitea.example.com: {scrub(url)!r}",
        )
    repo = r.string(forge, "repo", "forge")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+", repo):
        raise r.fail("forge.repo", f"expected owner/name: {repo!r}")
    target_url = r.string(forge, "targetUrl", "forge", "")
    if target_url and not re.fullmatch(r"https?://\S+", target_url):
        raise r.fail("forge.targetUrl", f"expected an http(s) URL: {scrub(target_url)!r}")
    return ForgeConfig(
        kind=ForgeKind(kind),
        url=url.rstrip("/"),
        repo=repo,
        token_file=Path(r.string(forge, "tokenFile", "forge")),
        target_url=target_url,
    )


def _receivers(raw: object, r: _Reader) -> tuple[Receiver, ...]:
    """``notifications:``, a list of receivers. A Slack URL is a credential, so it only comes from ``urlFile``;
    a generic receiver is always signed (``secretFile``)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise r.fail("notifications", "expected a list of receivers")
    receivers: list[Receiver] = []
    for index, item in enumerate(raw):
        path = f"notifications.{index}"
        entry = r.mapping(item, path)
        r.check_keys(entry, path, {"name", "url", "urlFile", "format", "secretFile", "events", "envs", "apps"})
        name = r.string(entry, "name", path)
        if name in {x.name for x in receivers}:
            raise r.fail(f"{path}.name", f"{name!r} is used by another receiver")
        try:
            kind = Format(r.string(entry, "format", path, Format.GENERIC.value))
        except ValueError:
            raise r.fail(f"{path}.format", f"expected one of {', '.join(Format)}") from None
        url = r.string(entry, "url", path, "")
        url_file = r.opt_path(entry, "urlFile", path)
        if bool(url) == (url_file is not None):
            raise r.fail(path, "set url or urlFile (one of them)")
        if url and kind is Format.SLACK:
            raise r.fail(f"{path}.url", "a Slack webhook URL is a credential: put it in a file and set urlFile")
        if url and (not re.fullmatch(r"https?://[^\s@/]+(/\S*)?", url)):
            raise r.fail(f"{path}.url", "expected an http(s) URL without credentials")
        secret_file = r.opt_path(entry, "secretFile", path)
        if kind is Format.GENERIC and secret_file is None:
            raise r.fail(path, "a generic receiver needs secretFile (its HMAC-SHA256 signing key)")
        receivers.append(
            Receiver(
                name=name,
                format=kind,
                url=url,
                url_file=url_file,
                secret_file=secret_file,
                events=frozenset(_names(entry, "events", path, r, Notice)),
                envs=frozenset(_names(entry, "envs", path, r)),
                apps=frozenset(_names(entry, "apps", path, r)),
            )
        )
    return tuple(receivers)


def _names(
    entry: Mapping[str, Any], key: str, path: str, r: _Reader, vocabulary: type[Notice] | None = None
) -> list[Any]:
    """A filter: a list of names (empty or absent: everything), each one of ``vocabulary`` when given."""
    value = entry.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise r.fail(f"{path}.{key}", "expected a list of names")
    if vocabulary is None:
        return value
    unknown = [v for v in value if v not in {e.value for e in vocabulary}]
    if unknown:
        raise r.fail(f"{path}.{key}", f"unknown event {unknown[0]!r} (known: {', '.join(vocabulary)})")
    return [vocabulary(v) for v in value]


def _clusters(top: Mapping[str, Any], r: _Reader) -> dict[str, ClusterConfig]:
    """``clusters: {name: {kubeconfigFile: path} | {kubeconfigSecret: secret/key} | {home: true}}``."""
    out: dict[str, ClusterConfig] = {}
    for name, value in r.mapping(top.get("clusters"), "clusters").items():
        path = f"clusters.{name}"
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", str(name)):
            raise r.fail(path, "a cluster name is lower-case letters, digits and '-'")
        entry = r.mapping(value, path)
        r.check_keys(entry, path, {"kubeconfigFile", "kubeconfigSecret", "home"})
        cluster = ClusterConfig(
            str(name),
            kubeconfig_file=r.opt_path(entry, "kubeconfigFile", path),
            kubeconfig_secret=r.string(entry, "kubeconfigSecret", path, ""),
            home=r.boolean(entry, "home", path, False),
        )
        if sum((cluster.kubeconfig_file is not None, bool(cluster.kubeconfig_secret), cluster.home)) != 1:
            raise r.fail(path, "set exactly one of kubeconfigFile, kubeconfigSecret or home: true")
        if cluster.kubeconfig_secret and not re.fullmatch(r"[^/\s]+/[^/\s]+", cluster.kubeconfig_secret):
            raise r.fail(f"{path}.kubeconfigSecret", "expected <secret name>/<key>")
        out[str(name)] = cluster
    return out


# Environment overrides: variable -> dotted YAML path. Applied to the document before parsing,
# so an invalid override is reported like a bad line (with the variable's name as the source).
ENV_OVERRIDES: Mapping[str, str] = {
    "GITSYNC_REPO_URL": "repo.url",
    "GITSYNC_BRANCH": "repo.branch",
    "GITSYNC_POLL_INTERVAL": "pollInterval",
    "GITSYNC_DRIFT_INTERVAL": "driftInterval",
    "GITSYNC_LISTEN": "listen",
    "GITSYNC_KUBECONFIG": "kubeconfig",
    "GITSYNC_CACHE_DIR": "cacheDir",
    "GITSYNC_SELF_HEAL": "selfHeal",
    "GITSYNC_PRUNE": "prune",
    "GITSYNC_HISTORY_LIMIT": "historyLimit",
    "GITSYNC_LEADER_ELECTION": "leaderElection.enabled",
    "GITSYNC_LEADER_NAMESPACE": "leaderElection.namespace",
    "GITSYNC_IDENTITY": "leaderElection.identity",
    "GITSYNC_LOG_FORMAT": "logFormat",
    "GITSYNC_SHARDS": "sharding.shards",
}

_TYPED_LEAVES = {"selfHeal", "prune", "historyLimit", "enabled", "shards"}
"""Overrides parsed as YAML scalars (``true``, ``1000``); the others stay strings."""


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def load(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read ``path`` and apply ``GITSYNC_*`` overrides (``environ`` defaults to the process environment).

    ``GITSYNC_ENVIRONMENTS=staging,prod`` replaces the environment list; ``POD_NAME`` and ``POD_NAMESPACE``
    (from the downward API) fill the leader identity and lease namespace when the file leaves them out.
    """
    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    source = path.name
    try:
        doc = yaml.safe_load(text)
        lines = _Lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{source}:{line}: config: invalid YAML: {getattr(e, 'problem', e)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}:1: config: expected a mapping")
    for variable, dotted in ENV_OVERRIDES.items():
        if variable in env:
            raw = env[variable]
            value: Any = yaml.safe_load(raw) if dotted.split(".")[-1] in _TYPED_LEAVES else raw
            _set_path(doc, dotted, value)
            lines.overrides[dotted] = variable
    if "GITSYNC_ENVIRONMENTS" in env:
        doc["environments"] = [e.strip() for e in env["GITSYNC_ENVIRONMENTS"].split(",") if e.strip()]
        lines.overrides["environments"] = "GITSYNC_ENVIRONMENTS"
    config = _parse(doc, _Reader(source, lines))
    leader = config.leader
    if not leader.identity:
        identity = env.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}"
        leader = replace(leader, identity=identity)
    if "leaderElection" not in doc or "namespace" not in (doc.get("leaderElection") or {}):
        leader = replace(leader, namespace=env.get("POD_NAMESPACE", leader.namespace))
    return replace(config, leader=leader)
