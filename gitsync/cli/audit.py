"""``gitsync audit --repo R``: every release, where it ran and how it ended, from Git alone.

Reads the clone at R: the ledger in ``refs/notes/gitsync`` (fetched from the ``origin`` remote first and merged
with any local notes, so a fresh ``git clone`` works), and the commits the notes name. No cluster is needed.
Exit status 0 when rows were shown (or none matched), 2 on an error. The JSON schema is in docs/promotion.md.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import click

from gitsync.adapters.notes import NotesLedger
from gitsync.cli.sync import fail, repo_option


def clone_ledger(repo: Path) -> NotesLedger:
    """The ledger of a person's clone, shared through its ``origin`` remote when it has one."""
    from gitsync.adapters.gitwrite import local_session

    with local_session(repo) as run:
        remote = "origin" if "origin" in run("remote").split() else ""
    return NotesLedger(partial(local_session, repo), remote)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since: expected a date like 2025-01-31 or 2025-01-31T12:00:00Z, got {text!r}")
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@click.command("audit")
@repo_option
@click.option("--env", "env", default=None, help="Only releases in this environment.")
@click.option("--app", "app", default=None, help="Only releases of this app.")
@click.option("--since", default=None, help="Only releases that finished at or after this date (UTC unless given).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table")
def command(repo: Path, env: str | None, app: str | None, since: str | None, output: str) -> None:
    """List every release recorded in the repository's ledger, newest first, with its evidence."""
    from gitsync.adapters.commits import read_commits
    from gitsync.adapters.gitwrite import local_session
    from gitsync.audit import COLUMNS, audit_rows, merged_heads
    from gitsync.errors import GitsyncError

    after = _since(since)
    try:
        notes = clone_ledger(repo).read()
        named = {e.promotion_commit or e.rollback_commit for entries in notes.values() for e in entries}
        with local_session(repo) as run:
            commits = read_commits(run, (set(notes) | named) - {""})
            commits |= read_commits(run, merged_heads(commits))
    except GitsyncError as e:
        fail(str(e))
    rows = [row.to_json() for row in audit_rows(notes, commits, env=env, app=app, since=after)]
    if output == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif output == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "steps": "; ".join(row["steps"]), "analysis": json.dumps(row["analysis"])})
        sys.stdout.write(out.getvalue())
    else:
        _table(rows)
        if not notes:  # an empty table alone reads like a broken command
            click.echo(
                "no release in the ledger (refs/notes/gitsync, fetched from origin when the clone has it): "
                "the agent (gitsync run) notes each release it finishes",
                err=True,
            )


def _table(rows: list[dict[str, object]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for column in ("TIME", "ENV", "APP", "COMMIT", "PR", "OUTCOME", "FROM", "AUTHOR", "SUBJECT", "EVIDENCE"):
        table.add_column(column)
    for row in rows:
        # Subjects, authors and evidence are user data: never read as markup.
        table.add_row(
            str(row["time"]),
            str(row["env"]),
            str(row["app"]),
            str(row["commit"])[:12],
            f"#{row['pullRequest']}" if row["pullRequest"] is not None else "",
            str(row["outcome"]),
            str(row["promotedFrom"]).partition("@")[0]
            + ("@" + str(row["promotedFrom"]).partition("@")[2][:7] if row["promotedFrom"] else ""),
            Text(str(row["author"])),
            Text(str(row["subject"])),
            Text(str(row["evidence"])),
        )
    Console(width=200).print(table)
