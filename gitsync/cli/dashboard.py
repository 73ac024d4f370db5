"""``gitsync dashboard``: the read-only dashboard on 127.0.0.1, reading the cluster with your own kubeconfig.

Nothing to secure (as ``kubectl argo rollouts dashboard``): it listens on the loopback address only and sees what
your credentials may read. With ``--repo`` (a clone of the repository the agent follows) it also shows the
promotion chain and release evidence from the Git ledger, each canary's step list and thresholds, rendered diffs
of releases and links to commits and pull requests when ``origin`` is a web forge. Runs until Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from functools import partial
from pathlib import Path

import click

from gitsync import log as logging
from gitsync.cli.audit import allowed_signers_option
from gitsync.cli.sync import connect, fail, fail_on, kubeconfig_option
from gitsync.errors import GitsyncError


@click.command("dashboard")
@kubeconfig_option
@click.option(
    "--repo",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="A clone of the followed repository: adds the Git ledger, step lists, diffs and forge links.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=3100, show_default=True, help="0 picks a free port.")
@allowed_signers_option
def command(kubeconfig: Path | None, repo: Path | None, port: int, allowed_signers: Path | None) -> None:
    """Serve the read-only dashboard on http://127.0.0.1:PORT/ until interrupted."""
    from gitsync.adapters.gitwrite import local_session
    from gitsync.adapters.trees import LocalTrees
    from gitsync.cli.audit import clone_ledger, ledger_verifier
    from gitsync.dashboard.access import Open
    from gitsync.dashboard.read import Board, LedgerRows, Renders, env_order
    from gitsync.dashboard.server import DashboardServer, Site
    from gitsync.dashboard.view import Forge

    logging.configure("auto", level="WARNING")
    if allowed_signers is not None and repo is None:
        fail("--allowed-signers checks the Git ledger's lines: it needs --repo (a clone)")
    verifier = ledger_verifier(allowed_signers)
    forge = None
    try:
        cluster = connect(kubeconfig)
        if repo is None:
            board = Board(cluster)
        else:
            with local_session(repo) as run:
                remote = run("remote", "get-url", "origin") if "origin" in run("remote").split() else ""
            forge = Forge.of(remote.strip())
            board = Board(
                cluster,
                env_order=env_order(repo),
                ledger=LedgerRows(
                    clone_ledger(repo), partial(local_session, repo), verifier.seal if verifier is not None else None
                ),
                renders=Renders(LocalTrees(repo)),
            )
        server = DashboardServer("127.0.0.1", port, board, Site(str(repo or "."), forge, "local"), Open())
    except GitsyncError as e:
        fail_on(e)
    except OSError as e:
        fail(f"127.0.0.1:{port}: cannot listen: {e.strerror}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    click.echo(f"gitsync dashboard: http://127.0.0.1:{server.port}/ (read-only; Ctrl-C stops it)", err=True)
    try:
        stop.wait()
    finally:
        server.stop()
