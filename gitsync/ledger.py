"""The release ledger: one JSON line per finished release, kept in the git note of the deployed commit.

Contract: pure, no I/O. ``LedgerEntry.to_line`` is deterministic (field order fixed, compact separators, times as
whole UTC seconds, the finish's milliseconds in ``finishedAtMs``), so writing the same release twice yields the same
line and the notes adapter can drop the second one. Only the fields below ever reach a note: numbers, commit ids,
hashes and step names, never a rendered value or a message from the cluster, so nothing secret can enter.
``parse_note`` reads what any version wrote: a line it cannot read is skipped and reported, keys it does not know
are ignored.

A line may end with a signature of itself (``SIGNATURE_KEY``, written by an agent with a signing key): always the
last key, over the exact bytes of the line without it (``split_signature``), so readers that do not check it
ignore it like any unknown key, and the line stays compact JSON in the documented key order.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gitsync.errors import TerminalError

__all__ = [
    "NOTES_REF",
    "NO_LIB",
    "SIGNATURE_KEY",
    "SIGNATURE_NAMESPACE",
    "AnalysisResult",
    "Approvals",
    "ForeignLineError",
    "LedgerEntry",
    "ReleaseContent",
    "ReleaseOutcome",
    "Seal",
    "SignersError",
    "parse_line",
    "parse_note",
    "split_signature",
    "with_signature",
]

NOTES_REF = "refs/notes/gitsync"
"""Where the ledger lives; ``git log --notes=gitsync`` shows it."""
SIGNATURE_KEY = "sig"
"""The last key of a signed line: the SSH signature of the line without it, armor stripped (its base64 body)."""
SIGNATURE_NAMESPACE = "gitsync-ledger"
"""The ``ssh-keygen -Y`` namespace of a line's signature: a commit signature (namespace ``git``) is no line's."""


class Seal(StrEnum):
    """What a line's signature says, checked against the allowed signers; the values are the wire format
    (``gitsync audit``'s ``signature``)."""

    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    BAD = "bad-signature"
    """Signed, but not by an allowed signer, or the line was changed after it was signed."""


class SignersError(TerminalError):
    """The allowed signers file cannot be used (missing, unreadable, a malformed line, no key): no line's seal is
    known, which is not the same as every line being badly signed. The message names the file and the line."""


class ForeignLineError(TerminalError):
    """A line made before (kept in a status while the remote was away) that a signing ledger will not write: it
    does not carry this agent's own signature, made when the line was made. The status lives in the
    environment's namespace; signing what it holds would sign what anyone editing ConfigMaps there wrote."""


class ReleaseOutcome(StrEnum):
    """How a release ended; the values are the wire format."""

    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    SUPERSEDED = "Superseded"
    REMOVED = "Removed"
    """The app left its environment's ``env.yaml`` (``apps:``) and everything of it was pruned: the
    release noted ends there, and nothing of the app runs in the environment after this line's ``finishedAt``.
    Noted on the commit of the release that was removed (so a repeat after a kill -9 is the same ending, whatever
    commit the removal ran at), with ``removalCommit`` naming the commit whose ``env.yaml`` no longer lists it."""

    @property
    def failed(self) -> bool:
        """The release did not hold (a rollback cites such a line as its evidence; a removal or a supersession is
        no failure of what ran)."""
        return self in (ReleaseOutcome.ROLLED_BACK, ReleaseOutcome.FAILED)


class Approvals(StrEnum):
    """Whether a line knows who approved the pull request its commit came through; the values are the wire format.

    A line of a release whose commit is not a pull request's (a direct push, an agent with no forge configured)
    says nothing about approvals at all."""

    KNOWN = "known"
    """The forge answered: ``approvedBy`` lists the approving reviewers (empty: merged without an approval)."""
    UNKNOWN = "unknown"
    """The forge could not be asked when the line was written (down, refused): who approved is not known, which
    is not the same as nobody. Lines are never rewritten, so it stays unknown; the forge's page still says."""


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """One analysis check as it ended: the value last measured (None: no data), the condition it had to meet
    (``result < 0.05``) and the verdict (``gitsync.analysis.run.Verdict`` values)."""

    name: str
    value: float | None
    condition: str
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "condition": self.condition, "verdict": self.verdict}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AnalysisResult:
        value = raw.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"analysis {raw.get('name')!r}: value must be a number or null")
        return cls(
            _text(raw, "name"), None if value is None else float(value), _text(raw, "condition"), _text(raw, "verdict")
        )


NO_LIB = "-"
"""``lib_tree`` of a commit without a ``lib/`` folder."""


@dataclass(frozen=True, slots=True)
class ReleaseContent:
    """What a release renders from, as a receiving environment pins it: the tree ids of ``apps/<app>`` and of
    ``lib/`` (a change to the shared helpers alone changes what every chart renders, so it is promoted like a
    chart change) and the hash of the promoted values.

    A ``lib_tree`` of "" was not recorded (a ledger line written before it was): it matches any, so the
    releases noted by an older gitsync keep verifying the pins they verified, and promote nothing again."""

    chart_tree: str
    lib_tree: str
    values_hash: str

    def same_as(self, other: ReleaseContent) -> bool:
        if (self.chart_tree, self.values_hash) != (other.chart_tree, other.values_hash):
            return False
        return self.lib_tree == other.lib_tree or not self.lib_tree or not other.lib_tree


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One release of one app in one environment, as its note line records it.

    ``revision`` is the deployed commit (the note's own commit; repeated so a line read alone still says it).
    ``chart_tree`` is the Git tree id of ``apps/<app>`` at that commit, ``lib_tree`` that of the shared ``lib/``
    (``NO_LIB`` when there is none; "" on lines written before it was noted) and ``values_hash`` the hash of the
    promoted values (see ``renderers.promotion.values_hash``): together (``content``) they identify what a
    receiving environment may pin. ``promotion_commit``/``rollback_commit`` name the commit gitsync wrote for
    this release. ``reason`` is why a rolled-back release was aborted, in gitsync's own words (``new version's
    pods are failing``, ``step analysis failed: error-rate``, ``aborted by gitsync rollout abort``: check names,
    never a message from the cluster); "" otherwise, and then not written.
    """

    env: str
    app: str
    revision: str
    digest: str
    chart_tree: str
    values_hash: str
    outcome: ReleaseOutcome
    started_at: float
    finished_at: float
    steps: tuple[str, ...] = ()
    analysis: tuple[AnalysisResult, ...] = ()
    agent: str = ""
    promotion_commit: str = ""
    rollback_commit: str = ""
    lib_tree: str = ""
    reason: str = ""
    removal_commit: str = ""
    approvals: Approvals | None = None
    approved_by: tuple[str, ...] = ()
    line: str = field(default="", compare=False, repr=False)
    """The note line as read, or as made by ``ports.Ledger.sign`` (signed then, when the ledger signs); "" for
    an entry not made into a line yet. What a signature covers (``split_signature``). Not part of what the entry
    is, so a line read back equals the entry it was written from."""

    @property
    def content(self) -> ReleaseContent:
        return ReleaseContent(self.chart_tree, self.lib_tree, self.values_hash)

    @property
    def recency(self) -> tuple[float, int]:
        """Sort key, newest last: the finish time, then a Superseded release before any other. A release is
        noted Superseded by the reconcile that renders the next one, which may end that release at the same
        instant (lines written before ``finishedAtMs`` was noted even share whole seconds), so at equal times the
        superseded one is the older. Sort with it rather than by ``finished_at`` alone, so that which release
        is the newest does not depend on the order the lines are read in."""
        return (self.finished_at, 0 if self.outcome is ReleaseOutcome.SUPERSEDED else 1)

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "env": self.env,
            "app": self.app,
            "revision": self.revision,
            "digest": self.digest,
            "chartTree": self.chart_tree,
            "libTree": self.lib_tree,
            "valuesHash": self.values_hash,
            "outcome": self.outcome.value,
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "steps": list(self.steps),
            "analysis": [a.to_json() for a in self.analysis],
            "agent": self.agent,
            "promotionCommit": self.promotion_commit,
            "rollbackCommit": self.rollback_commit,
            "finishedAtMs": _millis(self.finished_at),
        }
        if self.reason:
            line["reason"] = self.reason
        if self.removal_commit:
            line["removalCommit"] = self.removal_commit
        if self.approvals is not None:
            line |= {"approvals": self.approvals.value, "approvedBy": list(self.approved_by)}
        return line

    @property
    def ending(self) -> tuple[str, str, str, str, ReleaseOutcome]:
        """What the line records: this release (env, app, commit, digest) ended so. A line with the same ending
        is a repeat (an agent killed after noting, before its status said so, notes again with a new
        ``finished_at`` and ``agent``), and the ledger keeps the first. A signature is no part of it: a release
        noted unsigned and then again by an agent given a signing key since keeps its one (unsigned) line."""
        return (self.env, self.app, self.revision, self.digest, self.outcome)

    def to_line(self) -> str:
        """The note line: compact JSON, keys in the order above, no newline inside."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], *, line: str = "") -> LedgerEntry:
        steps = raw.get("steps", [])
        analysis = raw.get("analysis", [])
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise ValueError("steps must be a list of strings")
        if not isinstance(analysis, list) or not all(isinstance(a, dict) for a in analysis):
            raise ValueError("analysis must be a list of objects")
        approvals = raw.get("approvals")
        approved_by = raw.get("approvedBy", [])
        if not isinstance(approved_by, list) or not all(isinstance(a, str) for a in approved_by):
            raise ValueError("approvedBy must be a list of strings")
        return cls(
            env=_text(raw, "env", required=True),
            app=_text(raw, "app", required=True),
            revision=_text(raw, "revision"),
            digest=_text(raw, "digest"),
            chart_tree=_text(raw, "chartTree"),
            lib_tree=_text(raw, "libTree"),
            values_hash=_text(raw, "valuesHash"),
            outcome=ReleaseOutcome(_text(raw, "outcome", required=True)),
            started_at=_epoch(raw, "startedAt"),
            finished_at=_finished(raw),
            steps=tuple(steps),
            analysis=tuple(AnalysisResult.from_json(a) for a in analysis),
            agent=_text(raw, "agent"),
            promotion_commit=_text(raw, "promotionCommit"),
            rollback_commit=_text(raw, "rollbackCommit"),
            reason=_text(raw, "reason"),
            removal_commit=_text(raw, "removalCommit"),
            approvals=None if approvals is None else Approvals(approvals),
            approved_by=tuple(approved_by),
            line=line,
        )


def parse_note(text: str, report: Callable[[str], None] | None = None) -> tuple[LedgerEntry, ...]:
    """Every entry of a note, in note order. A line that is not a ledger entry (hand-written text, a damaged or
    future line) is skipped and passed to ``report`` as ``line N: problem``; blank lines are ignored."""
    entries: list[LedgerEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(parse_line(line))
        except (ValueError, KeyError, TypeError) as e:
            if report is not None:
                report(f"line {number}: not a ledger entry: {e}")
    return tuple(entries)


def parse_line(line: str) -> LedgerEntry:
    """The entry of one note line, which it keeps as its ``line``; ``ValueError``, ``KeyError`` or ``TypeError``
    when the line is not a ledger entry."""
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return LedgerEntry.from_json(raw, line=line)


def with_signature(line: str, signature: str) -> str:
    """``line`` (compact JSON, as ``LedgerEntry.to_line`` writes it) with ``signature`` as its last key."""
    return f"{line[:-1]},{json.dumps(SIGNATURE_KEY)}:{json.dumps(signature)}}}"


_SIGNED = f",{json.dumps(SIGNATURE_KEY)}:"


def split_signature(line: str) -> tuple[str, str]:
    """(the bytes a signature covers, the signature) of a note line; the signature is "" when the line has none.
    ``ValueError`` when the line carries one anywhere but as its last key, exactly as ``with_signature`` writes
    it: such a line was changed after it was signed, or never signed by gitsync."""
    raw = json.loads(line)
    if not isinstance(raw, dict) or SIGNATURE_KEY not in raw:
        return line, ""
    signature = raw[SIGNATURE_KEY]
    at = line.rfind(_SIGNED)
    if not isinstance(signature, str) or at < 0 or line[at:] != f"{_SIGNED}{json.dumps(signature)}}}":
        raise ValueError(f"{SIGNATURE_KEY} is not the line's last key")
    payload = line[:at] + "}"
    if SIGNATURE_KEY in json.loads(payload):
        raise ValueError(f"{SIGNATURE_KEY} appears twice")
    return payload, signature


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _millis(epoch: float) -> int:
    """Epoch milliseconds within ``_iso(epoch)``'s second (never rounded into the next one)."""
    second = math.floor(epoch)
    return second * 1000 + min(999, int((epoch - second) * 1000))


def _finished(raw: Mapping[str, Any]) -> float:
    """``finishedAt`` to the millisecond when the line has ``finishedAtMs`` within that second; lines written
    before it was noted (or with one that does not match) read as whole seconds."""
    whole = _epoch(raw, "finishedAt")
    millis = raw.get("finishedAtMs")
    if isinstance(millis, int) and not isinstance(millis, bool) and millis // 1000 == int(whole):
        return millis / 1000
    return whole


_UTC_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def _epoch(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key)
    if not isinstance(value, str) or not _UTC_SECOND.fullmatch(value):
        raise ValueError(f"{key} must be a UTC time like 2025-01-31T12:00:00Z")
    return datetime.fromisoformat(value).timestamp()  # strptime: 15 us, this: 1 us


def _text(raw: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{key} must be a {'non-empty ' if required else ''}string")
    return value
