"""The audit view: one row per release, joined from the ledger (git notes) and the commits it names.

Contract: pure, no I/O. Everything comes from Git: the note line (what ran where, how it ended, the analysis),
the noted commit (subject, author, who merged, the pull request) and the trailers gitsync wrote on promotion and
rollback commits. ``AuditRow.to_json`` is the documented schema (docs/promotion.md), stable for scripts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gitsync.ledger import LedgerEntry
from gitsync.ports import CommitInfo
from gitsync.promote import EVIDENCE, PROMOTED_FROM, ROLLBACK_OF, evidence

__all__ = ["COLUMNS", "AuditRow", "audit_rows", "merged_by", "merged_heads", "pull_request"]

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


def merged_heads(commits: Mapping[str, CommitInfo]) -> set[str]:
    """The merged branches' heads of the merge commits among ``commits`` that ``commits`` does not hold yet: where
    a promotion or rollback merged as a pull request keeps its trailers (read them too, then call again)."""
    return {parent for commit in commits.values() for parent in commit.parents[1:]} - set(commits)


def _gitsync_commit(noted: CommitInfo | None, commits: Mapping[str, CommitInfo]) -> CommitInfo | None:
    """The promotion or rollback commit a merge commit brought in (pull-request mode: the ledger notes the merge,
    and the entry names no commit of its own, since the agent did not write to the branch itself)."""
    for parent in noted.parents[1:] if noted is not None else ():
        merged = commits.get(parent)
        if merged is not None and (_trailer(merged, PROMOTED_FROM) or _trailer(merged, ROLLBACK_OF)):
            return merged
    return None


def _trailer(commit: CommitInfo | None, key: str) -> str:
    if commit is None:
        return ""
    return next((value for name, value in commit.trailers if name == key.lower()), "")


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
            "promotionCommit": self.entry.promotion_commit,
            "rollbackCommit": self.entry.rollback_commit,
        }


COLUMNS = (
    "time", "env", "app", "commit", "subject", "pullRequest", "author", "mergedBy", "promotedFrom", "evidence",
    "digest", "outcome", "rollbackOf", "startedAt", "finishedAt", "chartTree", "libTree", "valuesHash", "steps",
    "analysis", "agent", "promotionCommit", "rollbackCommit",
)  # fmt: skip
"""The keys of ``AuditRow.to_json`` in order: the JSON schema's fields and the CSV header."""


def audit_rows(
    notes: Mapping[str, Iterable[LedgerEntry]],
    commits: Mapping[str, CommitInfo],
    *,
    env: str | None = None,
    app: str | None = None,
    since: float | None = None,
) -> tuple[AuditRow, ...]:
    """One row per ledger entry that matches, newest first. ``promotedFrom`` and ``rollbackOf`` come from the
    first of these commits that carries them: the promotion or rollback commit the entry names, the one a noted
    merge commit merged (a promotion pull request), the noted commit. ``evidence`` comes from the first of them
    there is, else the entry's own outcome and analysis. ``commits`` holds the noted and named commits and their
    ``merged_heads``."""
    rows = []
    for sha, entries in notes.items():
        noted = commits.get(sha)
        for entry in entries:
            if (env and entry.env != env) or (app and entry.app != app):
                continue
            if since is not None and entry.finished_at < since:
                continue
            named = commits.get(entry.promotion_commit or entry.rollback_commit)
            merged = _gitsync_commit(noted, commits)
            written = named or merged or noted
            # A promotion merged as a pull request and rolled back: its rollback commit says what it undid, the
            # promotion commit it merged where it came from.
            sources = [c for c in (named, merged, noted) if c is not None]
            rows.append(
                AuditRow(
                    entry=entry,
                    commit=sha,
                    subject=noted.message.partition("\n")[0] if noted else "",
                    pull_request=pull_request(noted.message) if noted else None,
                    author=noted.author if noted else "",
                    merged_by=merged_by(noted) if noted else "",
                    promoted_from=next(filter(None, (_trailer(c, PROMOTED_FROM) for c in sources)), ""),
                    rollback_of=next(filter(None, (_trailer(c, ROLLBACK_OF) for c in sources)), ""),
                    evidence=_trailer(written, EVIDENCE) or evidence(entry),
                )
            )
    return tuple(sorted(rows, key=lambda row: (row.entry.finished_at, row.commit), reverse=True))
