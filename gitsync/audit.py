"""The audit view: one row per release, joined from the ledger (git notes) and the commits it names.

Contract: pure, no I/O. Everything comes from Git: the note line (what ran where, how it ended, the analysis),
the noted commit (subject, author, who merged, the pull request) and the trailers gitsync wrote on promotion and
rollback commits. ``AuditRow.to_json`` is the documented schema (docs/promotion.md), stable for scripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitsync.ledger import Approvals, LedgerEntry, ReleaseOutcome, Seal
from gitsync.ports import CommitInfo
from gitsync.promote import APP, ENV, EVIDENCE, OVERRIDE, PROMOTED_FROM, ROLLBACK_OF, evidence, trusted

__all__ = [
    "COLUMNS",
    "AuditRow",
    "approval_text",
    "approvals_text",
    "audit_rows",
    "commits_of",
    "inconsistencies",
    "merged_by",
    "merged_heads",
    "promoted_commits",
    "pull_request",
    "running_at",
]

_PULL_REQUEST = (
    re.compile(r"^Merge pull request #(\d+) from "),  # GitHub merge commit
    re.compile(r"^Merge pull request '.*' \(#(\d+)\) from "),  # Gitea / Forgejo merge commit
    re.compile(r"^See merge request \S+!(\d+)\s*$", re.MULTILINE),  # GitLab merge commit (body)
    re.compile(r"\(#(\d+)\)\s*$"),  # GitHub / Gitea squash: "title (#12)" (subject)
)
_WEB_COMMITTER = "<noreply@github.com>"
"""GitHub records itself as the committer of a merge made in its web UI; the one who merged is the author."""


def pull_request(message: str) -> int | None:
    """The pull/merge request number a forge wrote into a merge or squash commit's message, if any."""
    subject = message.partition("\n")[0]
    for pattern in _PULL_REQUEST:
        found = pattern.search(message if pattern.flags & re.MULTILINE else subject)
        if found:
            return int(found.group(1))
    return None


def merged_by(commit: CommitInfo) -> str:
    """Who merged: the committer of a merge commit or of a squashed pull request ("" for a plain commit)."""
    if len(commit.parents) < 2 and pull_request(commit.message) is None:
        return ""
    return commit.author if commit.committer.endswith(_WEB_COMMITTER) else commit.committer


def _trailer(commit: CommitInfo | None, key: str) -> str:
    if commit is None:
        return ""
    return next((value for name, value in commit.trailers if name == key.lower()), "")


def _written(sha: str, commits: Mapping[str, CommitInfo]) -> CommitInfo | None:
    """The commit whose trailers tell what gitsync wrote at ``sha``: ``sha`` itself, or, for a merge commit
    without them (a promotion or rollback pull request merged on the forge), the head it merged (its last parent),
    when that one carries them."""
    commit = commits.get(sha)
    if commit is None or len(commit.parents) < 2 or _trailer(commit, APP):
        return commit
    merged = commits.get(commit.parents[-1])
    return merged if _trailer(merged, APP) else commit


def merged_heads(commits: Iterable[CommitInfo]) -> set[str]:
    """The heads the merge commits among ``commits`` merged, which ``audit_rows`` reads trailers from."""
    return {commit.parents[-1] for commit in commits if len(commit.parents) > 1}


@dataclass(frozen=True, slots=True)
class AuditRow:
    entry: LedgerEntry
    commit: str
    subject: str
    pull_request: int | None
    author: str
    merged_by: str
    promoted_from: str
    rollback_of: str
    evidence: str
    promotion_commit: str = ""
    rollback_commit: str = ""
    override: str = ""
    """``Gitsync-Override``: why a person forced an unverified pin (``gitsync promote --force --reason``)."""
    change: CommitInfo | None = None
    """The commit the release's change was made in: for a promoted release the upstream commit it was promoted
    from (the promotion commit's author is gitsync, or whoever ran ``gitsync promote``), else the noted one."""
    signature: Seal | None = None
    """What the line's signature says against the allowed signers (``gitsync audit --allowed-signers``); None
    when not checked."""
    upstream: LedgerEntry | None = None
    """For a promoted release, the upstream environment's Succeeded line for the change it carried (joined when
    read: ``_upstream_line``), which says who approved that change; None when the ledger has none (a forced
    promotion) and for a release that was not promoted."""

    @property
    def approvals(self) -> str:
        """``known`` or ``unknown`` as the line says; a line that says nothing of a commit that names a pull
        request (written before approvals were noted, or by an agent without a forge) is ``unknown`` too: who
        approved was never read, which is not "nobody". "" for a commit that came through no pull request, and for
        a ``Removed`` line (the removal is not a release of its own)."""
        return _approvals(self.entry, self.pull_request)

    @property
    def change_approvals(self) -> str:
        """Who approved the change that runs, as ``approvals`` says it: for a promoted release from the upstream
        line of the change's commit (the promotion's own pull request approved only the pin), else this row's."""
        if not self.promoted_from:
            return self.approvals
        change = pull_request(self.change.message) if self.change else None
        if self.upstream is None:
            return "" if change is None else Approvals.UNKNOWN.value
        return _approvals(self.upstream, change)

    @property
    def change_approved_by(self) -> tuple[str, ...]:
        if not self.promoted_from:
            return self.entry.approved_by
        return self.upstream.approved_by if self.upstream is not None else ()

    def to_json(self) -> dict[str, Any]:
        line = self.entry.to_json()
        return {
            "time": line["finishedAt"],
            "env": self.entry.env,
            "app": self.entry.app,
            "commit": self.commit,
            "subject": self.subject,
            "pullRequest": self.pull_request,
            "author": self.author,
            "mergedBy": self.merged_by,
            "approvals": self.approvals,
            "approvedBy": list(self.entry.approved_by),
            "promotedFrom": self.promoted_from,
            "evidence": self.evidence,
            "digest": self.entry.digest,
            "outcome": self.entry.outcome.value,
            "rollbackOf": self.rollback_of,
            "startedAt": line["startedAt"],
            "finishedAt": line["finishedAt"],
            "chartTree": self.entry.chart_tree,
            "libTree": self.entry.lib_tree,
            "valuesHash": self.entry.values_hash,
            "steps": line["steps"],
            "analysis": line["analysis"],
            "agent": self.entry.agent,
            "promotionCommit": self.promotion_commit,
            "rollbackCommit": self.rollback_commit,
            "removalCommit": self.entry.removal_commit,
            "override": self.override,
            "changeAuthor": self.change.author if self.change else "",
            "changeMergedBy": merged_by(self.change) if self.change else "",
            "changePullRequest": pull_request(self.change.message) if self.change else None,
            "changeApprovals": self.change_approvals,
            "changeApprovedBy": list(self.change_approved_by),
            "signature": self.signature.value if self.signature else None,
        }


COLUMNS = (
    "time", "env", "app", "commit", "subject", "pullRequest", "author", "mergedBy", "approvals", "approvedBy",
    "promotedFrom", "evidence", "digest", "outcome", "rollbackOf", "startedAt", "finishedAt", "chartTree", "libTree",
    "valuesHash", "steps", "analysis", "agent", "promotionCommit", "rollbackCommit", "removalCommit", "override",
    "changeAuthor", "changeMergedBy", "changePullRequest", "changeApprovals", "changeApprovedBy", "signature",
)  # fmt: skip
"""The keys of ``AuditRow.to_json`` in order: the JSON schema's fields and the CSV header."""


def audit_rows(
    notes: Mapping[str, Iterable[LedgerEntry]],
    commits: Mapping[str, CommitInfo],
    *,
    env: str | None = None,
    app: str | None = None,
    since: float | None = None,
    until: float | None = None,
    seal: Callable[[LedgerEntry], Seal] | None = None,
) -> tuple[AuditRow, ...]:
    """One row per ledger entry that matches, newest first. ``promotedFrom``, ``rollbackOf``, ``evidence`` and
    ``override`` come from the trailers of the promotion or rollback commit the entry names, else of the noted
    commit; the evidence falls back to the entry's own outcome and analysis. ``promotionCommit`` and
    ``rollbackCommit`` are the entry's, else found in the ledger (``_later``). ``seal``: checks each shown line's
    signature (``signature``)."""
    promoted_by, rolled_back_by = _later(notes, commits)
    rows = []
    for sha, entries in notes.items():
        noted = commits.get(sha)
        for entry in entries:
            if (env and entry.env != env) or (app and entry.app != app):
                continue
            if (since is not None and entry.finished_at < since) or (until is not None and entry.finished_at > until):
                continue
            written = _written(entry.promotion_commit or entry.rollback_commit or sha, commits) or noted
            # A promotion merged as a pull request and rolled back: the rollback commit says what it undid, the
            # promotion it merged (the noted commit's merged head) where the release came from.
            sources = [c for c in (written, _written(sha, commits) or noted) if c is not None]
            source = next(filter(None, (_trailer(c, PROMOTED_FROM) for c in sources)), "")
            rows.append(
                AuditRow(
                    entry=entry,
                    commit=sha,
                    subject=noted.message.partition("\n")[0] if noted else "",
                    pull_request=pull_request(noted.message) if noted else None,
                    author=noted.author if noted else "",
                    merged_by=merged_by(noted) if noted else "",
                    promoted_from=source,
                    rollback_of=next(filter(None, (_trailer(c, ROLLBACK_OF) for c in sources)), ""),
                    evidence=_removal(entry, commits) or _trailer(written, EVIDENCE) or evidence(entry),
                    promotion_commit=entry.promotion_commit or promoted_by.get((f"{entry.env}@{sha}", entry.app), ""),
                    rollback_commit=entry.rollback_commit or rolled_back_by.get((entry.env, entry.app, sha), ""),
                    override=_trailer(written, OVERRIDE),
                    change=commits.get(source.partition("@")[2]) if source else noted,
                    upstream=_upstream_line(notes, source, entry.app, seal),
                    signature=seal(entry) if seal is not None else None,
                )
            )
    return tuple(sorted(rows, key=lambda row: (row.entry.finished_at, row.commit), reverse=True))


def approval_text(approvals: str, approved_by: Sequence[str]) -> str:
    """Who approved one pull request: the reviewers, ``none`` when the forge said nobody approved, ``unknown``
    when it was not read; "" for no pull request."""
    if approvals == Approvals.KNOWN.value:
        return ", ".join(approved_by) or "none"
    return approvals


def approvals_text(
    approvals: str,
    approved_by: Sequence[str],
    change_approvals: str,
    change_approved_by: Sequence[str],
    *,
    promoted: bool,
) -> str:
    """Who approved what runs, as ``gitsync audit``'s APPROVED BY column and the dashboard say it: for a promoted
    release both the change (``change: ...``, from the upstream line) and the promotion's pull request
    (``promotion: ...``), each when there is something to say; else ``approval_text`` of the release's own. The
    dashboard says the same in words (``approved`` in its macros.html)."""
    if not promoted:
        return approval_text(approvals, approved_by)
    parts = (
        ("change", approval_text(change_approvals, change_approved_by)),
        ("promotion", approval_text(approvals, approved_by)),
    )
    return "; ".join(f"{what}: {text}" for what, text in parts if text)


def _approvals(entry: LedgerEntry, pull: int | None) -> str:
    if entry.approvals is not None:
        return entry.approvals.value
    if pull is None or entry.outcome is ReleaseOutcome.REMOVED:
        return ""
    return Approvals.UNKNOWN.value


def _upstream_line(
    notes: Mapping[str, Iterable[LedgerEntry]], source: str, app: str, seal: Callable[[LedgerEntry], Seal] | None
) -> LedgerEntry | None:
    """The newest Succeeded line of ``app`` in the environment and at the commit ``source`` (``env@sha``, a
    ``Gitsync-Promoted-From``) names: the release a promotion carried. None for no source or no such line. With
    ``seal`` only a line it verifies (``promote.trusted``): the joined approvals are not shown beside the row's
    own signature, so an unsigned line must not lend them."""
    env, _, sha = source.partition("@")
    lines = [e for e in notes.get(sha, ()) if (e.env, e.app, e.outcome) == (env, app, ReleaseOutcome.SUCCEEDED)]
    return max((e for _, e in trusted(((sha, e) for e in lines), seal)), key=lambda e: e.recency, default=None)


def _removal(entry: LedgerEntry, commits: Mapping[str, CommitInfo]) -> str:
    """A ``Removed`` line's evidence: the commit that removed the app, and its subject when the clone holds it."""
    if entry.outcome is not ReleaseOutcome.REMOVED:
        return ""
    removal = commits.get(entry.removal_commit)
    subject = removal.message.partition("\n")[0] if removal is not None else ""
    return f"Removed at {entry.removal_commit[:12] or 'an unknown commit'}" + (f" ({subject})" if subject else "")


def running_at(rows: Iterable[AuditRow]) -> tuple[AuditRow, ...]:
    """What ran at a time T, from the rows of the releases that finished by then (``audit_rows(until=T)``): per
    environment and app the newest ``Succeeded`` release (a later ``RolledBack``, ``Failed`` or ``Superseded``
    one left it running), unless a ``Removed`` line came after it: the app no longer ran. Sorted by env, app.
    Rows whose signature was checked count only when verified (``promote.trusted``, the agent's rule): an unsigned
    Removed line would otherwise hide what ran, and it is not shown to say so."""
    running: dict[tuple[str, str], AuditRow] = {}
    for row in sorted(rows, key=lambda row: (row.entry.recency, row.commit)):
        if row.signature not in (None, Seal.VERIFIED):
            continue
        where = (row.entry.env, row.entry.app)
        if row.entry.outcome is ReleaseOutcome.SUCCEEDED:
            running[where] = row
        elif row.entry.outcome is ReleaseOutcome.REMOVED:
            running.pop(where, None)
    return tuple(running[where] for where in sorted(running))


def commits_of(
    notes: Mapping[str, Iterable[LedgerEntry]], read: Callable[[set[str]], Mapping[str, CommitInfo]]
) -> dict[str, CommitInfo]:
    """Every commit ``audit_rows`` reads, through ``read`` (ids -> commits): the noted ones and those the entries
    name, the heads their merge commits merged (a pull request's trailers), and the upstream commits promoted."""
    named = {e.promotion_commit or e.rollback_commit for entries in notes.values() for e in entries}
    named |= {e.removal_commit for entries in notes.values() for e in entries}
    commits = dict(read((set(notes) | named) - {""}))
    commits |= read(merged_heads(commits.values()) - set(commits))
    commits |= read(promoted_commits(commits.values()) - set(commits))
    return commits


def promoted_commits(commits: Iterable[CommitInfo]) -> set[str]:
    """The upstream commits that ``commits`` promoted (their ``Gitsync-Promoted-From``), which ``audit_rows``
    also needs: a forced promotion may name a commit no ledger line is on."""
    return {_trailer(commit, PROMOTED_FROM).partition("@")[2] for commit in commits} - {""}


def _later(
    notes: Mapping[str, Iterable[LedgerEntry]], commits: Mapping[str, CommitInfo]
) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str, str], str]]:
    """The commits that promoted or rolled back a release, found from the releases they made: a line is written
    when its release ends, before anything promotes it or rolls it back, so the line itself cannot name them.
    ``(env@sha, app)`` -> the first noted promotion commit whose ``Gitsync-Promoted-From`` is it, and ``(env, app,
    sha)`` -> the first noted commit there whose ``Gitsync-Rollback-Of`` is ``sha``."""
    promoted_by: dict[tuple[str, str], str] = {}
    rolled_back_by: dict[tuple[str, str, str], str] = {}
    ordered = sorted(((e.recency, sha, e) for sha, entries in notes.items() for e in entries), key=lambda t: t[:2])
    for _, sha, entry in ordered:
        commit = _written(sha, commits)
        source, undone = _trailer(commit, PROMOTED_FROM), _trailer(commit, ROLLBACK_OF)
        if source:
            promoted_by.setdefault((source, entry.app), sha)
        if undone:
            rolled_back_by.setdefault((entry.env, entry.app, undone), sha)
    return promoted_by, rolled_back_by


def inconsistencies(notes: Mapping[str, Iterable[LedgerEntry]], commits: Mapping[str, CommitInfo]) -> list[str]:
    """What the ledger says that cannot all be true, one line each: one release noted with two outcomes (an edited
    line merged with the agent's own copy), and a promotion without a forced reason whose content no Succeeded
    release upstream has (a line removed or edited, or a pin written by hand: the agent's guard would not have
    applied it). Not proof against tampering (only a line's signature is: ``--allowed-signers``), but what an
    edit of unsigned lines leaves behind."""
    found = []
    outcomes: dict[tuple[str, str, str, str], set[str]] = {}
    succeeded: dict[tuple[str, str], list[LedgerEntry]] = {}
    for sha, entries in notes.items():
        for entry in entries:
            outcomes.setdefault((entry.env, entry.app, sha, entry.digest), set()).add(entry.outcome.value)
            if entry.outcome is ReleaseOutcome.SUCCEEDED:
                succeeded.setdefault((entry.env, entry.app), []).append(entry)
    for (env, app, sha, _), seen in sorted(outcomes.items()):
        if len(seen - {ReleaseOutcome.SUPERSEDED.value, ReleaseOutcome.REMOVED.value}) > 1:
            found.append(f"{env} {app} at {sha[:12]}: one release noted as {' and '.join(sorted(seen))}")
    for sha, entries in sorted(notes.items()):
        commit = _written(sha, commits)
        source = _trailer(commit, PROMOTED_FROM)
        if not source or _trailer(commit, OVERRIDE):
            continue
        from_env, _, promoted = source.partition("@")
        mine = [  # a Superseded line's values are not known (its valuesHash is that of none)
            e
            for e in entries
            if (e.env, e.app) == (_trailer(commit, ENV), _trailer(commit, APP))
            and e.outcome not in (ReleaseOutcome.SUPERSEDED, ReleaseOutcome.REMOVED)
        ]
        upstream = succeeded.get((from_env, mine[0].app), []) if mine else []
        if mine and not any(u.content.same_as(e.content) for e in mine for u in upstream):
            found.append(
                f"{mine[0].env} {mine[0].app} at {sha[:12]}: promoted from {from_env}@{promoted[:12]} unforced, "
                f"but {from_env}'s ledger holds no Succeeded release of its content"
            )
    return found
