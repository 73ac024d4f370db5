"""The ``gitsync`` command line.

Subcommands live one per module and are imported only when invoked, so ``gitsync render`` never pays for
importing the Kubernetes client. To add one, write ``gitsync/cli/<name>.py`` with a click command called
``command`` and add it to ``COMMANDS``.
"""

from __future__ import annotations

import atexit
import gc
import importlib
from typing import Any

import click

from gitsync import __version__

# At exit the interpreter runs a full cyclic collection over everything still alive (a diff of 1,000 objects holds
# about 100,000), only to free it moments before the process ends: measured 25 ms of a 0.3 s `gitsync diff`.
# Freezing at exit skips that pass; objects are still released by reference counting.
atexit.register(gc.freeze)

LONG_RUNNING = frozenset({"run", "dashboard"})
"""Commands that serve until stopped; every other one does one thing and exits, with the cyclic collector off:
decoding a large render and the cluster's lists allocates so many objects that the collector ran 88 times,
18 ms of a 0.3 s no-op `gitsync diff` of a 5 MB repository, to find almost nothing (what it holds is freed by
reference counting; the few cycles left die with the process)."""

COMMANDS: dict[str, str] = {
    # name: "module:attribute"
    "diff": "gitsync.cli.diff:command",
    "plan": "gitsync.cli.plan:command",
    "render": "gitsync.cli.render:command",
    "sync": "gitsync.cli.sync:command",
    "status": "gitsync.cli.status:command",
    "run": "gitsync.cli.run:command",
    "history": "gitsync.cli.history:command",
    "audit": "gitsync.cli.audit:command",
    "promote": "gitsync.cli.promote:command",
    "rollback": "gitsync.cli.promote:rollback",
    "rollout": "gitsync.cli.rollout:group",
    # Argo Rollouts' verbs at the top as well (`kubectl argo rollouts abort|retry`); `promote` is taken by the
    # promotion between environments, so the rollout's stays `gitsync rollout promote`
    "abort": "gitsync.cli.rollout:abort",
    "retry": "gitsync.cli.rollout:retry",
    "dashboard": "gitsync.cli.dashboard:command",
}


class _LazyGroup(click.Group):
    table = COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.table.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in LONG_RUNNING:
            gc.disable()  # before the command's module is imported: importing allocates as much as the work
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """Runs the command; the collector is on again afterwards for a caller in the same process (tests)."""
        collecting = gc.isenabled()
        try:
            return super().invoke(ctx)
        finally:
            if collecting:
                gc.enable()


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gitsync")
def main() -> None:
    """gitsync: follow a Git repository and deliver it to Kubernetes, gradually and reversibly."""
