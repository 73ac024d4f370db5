"""``gitsync run --config agent.yaml``: the long-running agent (in a cluster, or against a kubeconfig).

Wires the adapters (Kubernetes, Git, clock) to the runtime (queue, poll and drift jobs, HTTP server, leader
election) and runs until SIGTERM or SIGINT, then stops taking work, lets reconciles in flight finish and
releases the leader Lease so a follower takes over at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from gitsync import log as logging
from gitsync.errors import GitsyncError

if TYPE_CHECKING:
    from gitsync.adapters.forge import ForgeClient
    from gitsync.adapters.git import GitRepository
    from gitsync.adapters.kube import KubeCluster
    from gitsync.adapters.ledger_signature import SshLedgerVerifier
    from gitsync.cache import WatchCache
    from gitsync.dashboard.server import DashboardServer
    from gitsync.history import Status
    from gitsync.model import AppEnv
    from gitsync.ports import Clock, StateStore
    from gitsync.promotion import Promotions
    from gitsync.runtime.agent import Agent
    from gitsync.runtime.config import AgentConfig, ForgeConfig


def forge_client(forge: ForgeConfig, clock: Clock) -> ForgeClient:
    """The forge API client of ``forge:`` in agent.yaml (``gitsync plan --comment`` makes its own from flags)."""
    from gitsync.adapters.forge import ForgeClient

    return ForgeClient(forge.kind, forge.url, forge.repo, forge.token_file, clock=clock)


def ledger_verifier(config: AgentConfig) -> SshLedgerVerifier | None:
    """The checker of ledger signatures with ``repo.verify.allowedSignersFile``, shared by the promote stage and
    the dashboard (one verdict per line, one log event per problem); the file is checked now, so a broken one is
    logged at start (``ledger.allowed_signers_invalid``, naming its line), and the agent runs on: nothing new is
    promoted or pinned until the file is fixed."""
    from contextlib import suppress

    from gitsync.adapters.ledger_signature import SshLedgerVerifier
    from gitsync.ledger import SignersError

    signers = config.repo.verify.allowed_signers_file
    if signers is None:
        return None
    verifier = SshLedgerVerifier(signers)
    with suppress(SignersError):  # logged by check; the statuses it blocks say it again
        verifier.check()
    return verifier


def promotions(
    config: AgentConfig, git: GitRepository, store: StateStore, verifier: SshLedgerVerifier | None
) -> Promotions:
    """The pin guard, the promote stage and the ledger, writing to the followed repository with the read
    credentials as ``repo.write`` says (author, optional SSH signing key: it signs the commits and the ledger
    lines); with ``verifier`` (``ledger_verifier``) only ledger lines signed by an allowed key are trusted."""
    import socket

    from gitsync.adapters.gitwrite import CacheWriter, Identity
    from gitsync.adapters.ledger_signature import SshLineSigner
    from gitsync.adapters.notes import NotesLedger
    from gitsync.history import History
    from gitsync.promotion import Promotions

    write = config.repo.write
    identity = Identity(write.author_name, write.author_email)
    history = History(store)
    served = {selection.name for selection in config.environments}

    def status(key: AppEnv, namespace: str) -> Status | None:
        """An upstream this agent deploys has its status here; another agent's (one per cluster) is judged by
        its ledger in Git alone."""
        return history.status(key, namespace) if key.env in served else None

    if verifier is not None and not write.signing_key_file:
        logging.get("gitsync.run").warning(
            "ledger.verify_without_signing",
            problem="repo.verify.allowedSignersFile without repo.write.signingKeyFile: this agent's own ledger "
            "lines are unsigned, so it does not trust them",
        )
    return Promotions(
        NotesLedger(
            git.cache,
            config.repo.url,
            identity=identity,
            sign=SshLineSigner(write.signing_key_file) if write.signing_key_file else None,
        ),
        CacheWriter(git, identity, signing_key=write.signing_key_file),
        tree=git.snapshot,
        tree_id=git.tree_id,
        status=status,
        branch=config.repo.branch,
        agent=config.leader.identity or socket.gethostname(),
        verifier=verifier,
    )


def dashboard(
    config: AgentConfig,
    cluster: KubeCluster,
    git: GitRepository,
    agent: Agent,
    cache: WatchCache | None,
    verifier: SshLedgerVerifier | None,
) -> DashboardServer:
    """The read-only dashboard on ``dashboard.listen``: the agent's view of the cluster and the Git ledger, shown
    only to bearers of a token allowed to read the state ConfigMaps (``gitsync.dashboard.access``). An app-env's
    page reads its state and workloads from the agent's watch cache (``cache``), not from the API server; each
    ledger line shows its signature state when ``verifier`` checks them (as the promote stage trusts them)."""
    from gitsync.adapters.notes import NotesLedger
    from gitsync.dashboard.access import TokenAccess
    from gitsync.dashboard.read import Board, LedgerRows, Renders
    from gitsync.dashboard.server import DashboardServer, Site
    from gitsync.dashboard.view import Forge

    board = Board(
        cluster,
        env_order=[e.name for e in config.environments],
        ledger=LedgerRows(
            NotesLedger(git.cache, config.repo.url), git.cache, seal=verifier.seal if verifier is not None else None
        ),
        renders=Renders(git.snapshot),
        scope=agent.namespaces,
        cache=cache,
    )
    host, _, port = config.dashboard_listen.rpartition(":")
    site = Site("<your clone>", Forge.of(config.repo.url), "served by the agent")
    return DashboardServer(host or "0.0.0.0", int(port), board, site, TokenAccess(cluster, board.namespaces))  # noqa: S104


@click.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="agent.yaml; GITSYNC_* environment variables override its fields.",
)
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None)
def command(config_path: Path, log_format: str | None) -> None:
    """Follow the configured branch and keep the cluster in sync with it."""
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.git import GitRepository
    from gitsync.adapters.http_check import HttpClient
    from gitsync.adapters.kube import KubeCluster
    from gitsync.adapters.prometheus import PrometheusClient
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.adapters.webhook_post import WebhookPost
    from gitsync.analysis.measure import Measurer
    from gitsync.cache import WatchCache
    from gitsync.cli.sync import connect, fail, fail_on
    from gitsync.events import EventSink
    from gitsync.notify import Notifier, Outbox
    from gitsync.runtime import config as agent_config
    from gitsync.runtime.agent import Agent
    from gitsync.runtime.clusters import HOME, Clusters, Connected
    from gitsync.runtime.http import Endpoints, HttpServer
    from gitsync.runtime.leader import LeaderElector
    from gitsync.runtime.shards import ShardSet
    from gitsync.strategy.executor import RolloutExecutor

    try:
        config = agent_config.load(config_path)
    except GitsyncError as e:
        fail_on(e)
    logging.configure(log_format or config.log_format)
    log = logging.get("gitsync.run")

    clock = SystemClock()
    try:
        cluster = connect(config.kubeconfig)
    except GitsyncError as e:
        fail_on(e)
    except Exception as e:  # noqa: BLE001 - in-cluster config and the client's loaders raise assorted errors
        where = config.kubeconfig or "in-cluster service account"
        fail(f"{where}: cannot load cluster configuration: {e}")
    git = GitRepository(
        config.repo.url,
        config.repo.branch,
        config.cache_dir,
        auth=config.repo.auth,
        verify=config.repo.verify,
    )
    elector: LeaderElector | None = None
    shards: ShardSet | None = None
    agent: Agent
    if config.sharding.shards:
        shards = ShardSet(
            cluster, config.leader, config.sharding.shards, clock, on_change=lambda s, held: agent.on_shard(s, held)
        )
    elif config.leader.enabled:
        elector = LeaderElector(cluster, config.leader, clock, on_change=lambda leading: agent.on_leadership(leading))
    measurer = Measurer(PrometheusClient(), HttpClient())

    def watched(target: KubeCluster) -> WatchCache | None:
        """The cluster's watch cache; what the agent writes it reads back from the cache at once."""
        cache = WatchCache(target) if config.drift_watch else None
        if cache is not None:
            target.on_write(cache.wrote)
        return cache

    home_cache = watched(cluster)
    store = ConfigMapStateStore(cluster, live=home_cache)

    def connected(name: str, target: KubeCluster, cache: WatchCache | None) -> Connected:
        """One cluster's client, watch cache and rollout executor; its records go to the home ``store``."""
        events = EventSink(target, clock, config.leader.identity)
        rollouts = RolloutExecutor(target, store, measurer=measurer, events=events, reader=cache)
        return Connected(name, target, cache, rollouts)

    def connect_target(name: str, kubeconfig: Path) -> Connected:
        target = KubeCluster(kubeconfig, name=name)
        return connected(name, target, watched(target))

    home = connected(HOME, cluster, home_cache)
    verifier = ledger_verifier(config)
    clusters = Clusters(home, cluster, config.leader.namespace, config.clusters, connect_target)
    agent = Agent(
        config,
        cluster,
        store,
        git,
        clock,
        elector=elector,
        cache=home.cache,
        rollouts=home.rollouts,
        promotions=promotions(config, git, store, verifier),
        forge=forge_client(config.forge, clock) if config.forge is not None else None,
        notifier=Notifier(config.notifications, WebhookPost(), Outbox(store), clock) if config.notifications else None,
        clusters=clusters,
        shards=shards,
    )
    host, port = config.listen_host_port
    server = HttpServer(
        host,
        port,
        Endpoints(
            branch=config.repo.branch,
            secrets=config.webhook_secrets,
            on_push=agent.on_push,
            ready=agent.ready,
            on_pull_request=agent.plan_comments.on_pull_request if agent.plan_comments is not None else None,
        ),
    )

    board = dashboard(config, cluster, git, agent, home_cache, verifier) if config.dashboard_listen else None

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("agent.signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info("http.listening", address=f"{host}:{server.port}")
    if board is not None:
        board.start()
        log.info("dashboard.listening", address=config.dashboard_listen.rpartition(":")[0] + f":{board.port}")
    agent.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.stop()
        server.stop()
        if board is not None:
            board.stop()
    sys.exit(0)
