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
from typing import TYPE_CHECKING, Any

import click

from gitsync.adapters.notes import NotesLedger
from gitsync.cli.sync import fail, repo_option, table_console
from gitsync.ledger import Seal

if TYPE_CHECKING:
    from gitsync.adapters.ledger_signature import SshLedgerVerifier


allowed_signers_option = click.option(
    "--allowed-signers",
    "allowed_signers",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The allowed signers file of the agent's repo.verify.allowedSignersFile: check each ledger line's "
    "signature; only lines one of its keys signed count, as for the agent.",
)


def ledger_verifier(allowed_signers: Path | None) -> SshLedgerVerifier | None:
    """The checker of ledger signatures for ``--allowed-signers`` (None without it); a file that cannot be used is
    the command's one-line error naming the file and line. Commands say what it finds themselves (no log)."""
    from gitsync.adapters.ledger_signature import SshLedgerVerifier
    from gitsync.errors import GitsyncError

    if allowed_signers is None:
        return None
    verifier = SshLedgerVerifier(allowed_signers, report=None)
    try:
        verifier.check()
    except GitsyncError as e:
        fail(str(e))
    return verifier


def clone_ledger(repo: Path) -> NotesLedger:
    """The ledger of a person's clone, shared through its ``origin`` remote when it has one."""
    from gitsync.adapters.gitwrite import local_session

    with local_session(repo) as run:
        remote = "origin" if "origin" in run("remote").split() else ""
    return NotesLedger(partial(local_session, repo), remote)


def _moment(option: str, text: str | None, *, end: bool = False) -> float | None:
    """``--since``/``--until``/``--at`` as epoch seconds: a date (its midnight) or a time, UTC unless an offset is
    given. ``end``: a time given to the second means up to the end of that second, as the rows show whole seconds
    (a release shown finished at 12:00:05Z is in ``--until 2025-01-31T12:00:05Z``)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: expected a date like 2025-01-31 or 2025-01-31T12:00:00Z, got {text!r}")
    moment = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return moment + 0.999 if end and not when.microsecond else moment


@click.command("audit")
@repo_option
@click.option("--env", "env", default=None, help="Only releases in this environment.")
@click.option("--app", "app", default=None, help="Only releases of this app.")
@click.option("--since", default=None, help="Only releases that finished at or after this date (UTC unless given).")
@click.option("--until", default=None, help="Only releases that finished at or before this date (UTC unless given).")
@click.option(
    "--at",
    "at",
    default=None,
    help="What ran at this time: per env and app the release running then; apps removed by then are not listed.",
)
@allowed_signers_option
@click.option("-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table")
def command(
    repo: Path,
    env: str | None,
    app: str | None,
    since: str | None,
    until: str | None,
    at: str | None,
    allowed_signers: Path | None,
    output: str,
) -> None:
    """List every release recorded in the repository's ledger, newest first, with its evidence."""
    from gitsync.adapters.commits import read_commits
    from gitsync.adapters.gitwrite import local_session
    from gitsync.audit import COLUMNS, audit_rows, commits_of, inconsistencies, running_at
    from gitsync.errors import GitsyncError

    if at is not None and (since is not None or until is not None):
        fail("--at: give it alone, without --since or --until (it shows what ran at that one time)")
    after, before = _moment("--since", since), _moment("--until", until, end=True)
    if at is not None:
        before = _moment("--at", at, end=True)
    verifier = ledger_verifier(allowed_signers)
    try:
        notes = clone_ledger(repo).read()
        with local_session(repo) as run:
            commits = commits_of(notes, lambda shas: read_commits(run, shas))
    except GitsyncError as e:
        fail(str(e))
    try:
        found = audit_rows(
            notes, commits, env=env, app=app, since=after, until=before, seal=verifier.seal if verifier else None
        )
    except GitsyncError as e:
        fail(str(e))
    if at is not None:
        found = running_at(found)
    rows = [row.to_json() for row in found]
    for problem in inconsistencies(notes, commits):  # on stderr, so -o json and csv stay machine-readable
        click.echo(f"ledger inconsistent: {problem}", err=True)
    for shown in found:
        if shown.signature is not None and shown.signature is not Seal.VERIFIED:
            click.echo(
                f"ledger line not trusted: {shown.entry.env} {shown.entry.app} at {shown.commit[:12]} "
                f"({shown.entry.outcome.value}): {_UNTRUSTED[shown.signature]}",
                err=True,
            )
    if output == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif output == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            joined = {key: "; ".join(row[key]) for key in ("steps", "approvedBy", "changeApprovedBy")}
            writer.writerow({**row, **joined, "analysis": json.dumps(row["analysis"])})
        sys.stdout.write(out.getvalue())
    else:
        _table(rows, signatures=verifier is not None)
        if not notes:  # an empty table alone reads like a broken command
            click.echo(
                "no release in the ledger (refs/notes/gitsync, fetched from origin when the clone has it): "
                "the agent (gitsync run) notes each release it finishes",
                err=True,
            )


_UNTRUSTED = {
    Seal.UNSIGNED: "unsigned",
    Seal.BAD: "bad signature (not an allowed signer's, or the line changed after it was signed)",
}


def _table(rows: list[dict[str, object]], *, signatures: bool) -> None:
    """The rows as a table; with ``signatures`` (``--allowed-signers``) a SIGNATURE column."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    columns = ("TIME", "ENV", "APP", "COMMIT", "PR", "APPROVED BY", "OUTCOME", "FROM", "AUTHOR", "SUBJECT", "EVIDENCE")
    for column in (*columns, "SIGNATURE") if signatures else columns:
        table.add_column(column)
    for row in rows:
        # Subjects, authors and evidence are user data: never read as markup.
        table.add_row(
            str(row["time"]),
            str(row["env"]),
            str(row["app"]),
            str(row["commit"])[:12],
            _pull_request(row),
            Text(_approved(row)),
            str(row["outcome"]),
            str(row["promotedFrom"]).partition("@")[0]
            + ("@" + str(row["promotedFrom"]).partition("@")[2][:7] if row["promotedFrom"] else ""),
            Text(_author(row)),
            Text(str(row["subject"])),
            Text(f"forced: {row['override']}; {row['evidence']}" if row["override"] else str(row["evidence"])),
            *([str(row["signature"])] if signatures else []),
        )
    table_console().print(table)


def _approved(row: dict[str, Any]) -> str:
    from gitsync.audit import approvals_text

    return approvals_text(
        row["approvals"],
        row["approvedBy"],
        row["changeApprovals"],
        row["changeApprovedBy"],
        promoted=bool(row["promotedFrom"]),
    )


def _author(row: dict[str, object]) -> str:
    """Who made the change; for a promotion also who promoted it (gitsync, or the person who forced it)."""
    if row["promotedFrom"] and row["changeAuthor"] and row["changeAuthor"] != row["author"]:
        return f"{row['changeAuthor']}, promoted by {row['author']}"
    return str(row["author"])


def _pull_request(row: dict[str, object]) -> str:
    """The deployed commit's pull request, else that of the change a promotion carried."""
    number = row["pullRequest"] if row["pullRequest"] is not None else row["changePullRequest"]
    return f"#{number}" if number is not None else ""
