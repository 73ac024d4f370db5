"""Two things an auditor reads in the ledger besides how a release ended: that an app was removed (a ``Removed``
line, written once), and who approved the pull request a release came through (``approvedBy``), or that this is
not known because the forge could not be asked. Real Git repositories and a real (closed) TCP port; the forges'
answers as their APIs document them."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gitrepos import Server, git
from memstore import MemoryStore
from test_promotion_note import notes_repository, promotions, staging_release

from gitsync import inventory as inventories
from gitsync import removal as removals
from gitsync.adapters.forge import ForgeClient, approvers, merged_pull
from gitsync.adapters.git import GitRepository
from gitsync.adapters.gitwrite import Identity
from gitsync.adapters.notes import NotesLedger
from gitsync.audit import audit_rows, inconsistencies, running_at
from gitsync.errors import TransientError
from gitsync.history import History, Result, Status
from gitsync.ledger import Approvals, LedgerEntry, ReleaseOutcome
from gitsync.model import AppEnv
from gitsync.ports import Commit, ForgeKind, Snapshot
from gitsync.record import LedgerSink, StatusSink
from gitsync.result import Kind, ReconcileResult, Target
from renderers import render_app

KEY = AppEnv("podinfo", "staging")


def review(number: int, login: str, state: str, **flags: bool) -> dict[str, Any]:
    return {"id": number, "user": {"login": login}, "state": state, "submitted_at": "2026-01-01T00:00:00Z", **flags}


@pytest.mark.parametrize(
    ("kind", "answer", "expected"),
    [
        (
            ForgeKind.GITEA,
            [
                review(1, "bob", "APPROVED"),
                review(2, "carol", "APPROVED"),
                review(3, "carol", "REQUEST_CHANGES"),  # changed her mind
                review(4, "dave", "APPROVED", stale=True),  # approved an older head
                review(5, "erin", "APPROVED", dismissed=True),
                review(6, "bob", "COMMENT"),  # a comment leaves bob's approval standing
                review(7, "frank", "PENDING"),  # a draft is no verdict
                review(8, "gus", "REQUEST_REVIEW"),
            ],
            ("bob",),
        ),
        (
            ForgeKind.GITHUB,
            [
                review(10, "bob", "APPROVED"),
                review(11, "carol", "APPROVED"),
                review(12, "carol", "DISMISSED"),
                review(13, "dave", "CHANGES_REQUESTED"),
                review(14, "dave", "APPROVED"),
                review(15, "bob", "COMMENTED"),
            ],
            ("bob", "dave"),
        ),
        (ForgeKind.GITEA, [], ()),
        (
            ForgeKind.GITLAB,
            {"approved": True, "approved_by": [{"user": {"username": "zoe"}}, {"user": {"username": "al"}}]},
            ("al", "zoe"),
        ),
    ],
)
def test_who_approves_is_each_reviewers_latest_verdict(kind: ForgeKind, answer: Any, expected: tuple[str, ...]) -> None:
    assert approvers(kind, answer) == expected
    if kind is not ForgeKind.GITLAB:
        assert approvers(kind, list(reversed(answer))) == expected, "ordered by id, not by the answer's order"


@pytest.mark.parametrize(("kind", "answer"), [(ForgeKind.GITEA, {"message": "x"}), (ForgeKind.GITLAB, [])])
def test_an_answer_that_is_no_list_of_reviews_is_not_taken_for_no_approval(kind: ForgeKind, answer: Any) -> None:
    with pytest.raises(TransientError):
        approvers(kind, answer)


@pytest.mark.parametrize(
    ("kind", "answer", "expected"),
    [
        (ForgeKind.GITEA, {"number": 7, "merged": True, "merged_at": "2026-01-01T00:00:00Z"}, 7),
        (ForgeKind.GITEA, {"number": 7, "merged": False, "merged_at": None}, None),
        # GitHub lists every pull request that contains the commit: an open one built on it is not its origin.
        (ForgeKind.GITHUB, [{"number": 9, "merged_at": None}, {"number": 4, "merged_at": "2026-01-01T00:00:00Z"}], 4),
        (ForgeKind.GITHUB, [], None),
        (ForgeKind.GITLAB, [{"iid": 3, "state": "opened"}, {"iid": 2, "id": 901, "state": "merged"}], 2),
        (ForgeKind.GITLAB, [{"iid": 3, "state": "closed"}], None),
    ],
)
def test_the_pull_request_of_a_commit_is_the_merged_one_the_forge_names(
    kind: ForgeKind, answer: Any, expected: int | None
) -> None:
    assert merged_pull(kind, answer) == expected


@pytest.mark.parametrize(("kind", "answer"), [(ForgeKind.GITEA, []), (ForgeKind.GITHUB, {"message": "x"})])
def test_an_answer_that_is_no_pull_request_is_not_taken_for_none(kind: ForgeKind, answer: Any) -> None:
    with pytest.raises(TransientError):
        merged_pull(kind, answer)


# ------------------------------------------------------------------------------------------------ the ledger


class Reviews:
    """A forge whose pull request 7 two people approved (what Gitea answered in tests/e2e/test_forge.py); it
    knows the commits in ``pulls`` came through a pull request (a rebase merge leaves no trace in the message)."""

    def __init__(self, pulls: dict[str, int] | None = None, every: int | None = None) -> None:
        """``pulls``: the pull request of each commit; ``every``: of any other commit."""
        self.asked: list[int] = []
        self.looked_up: list[str] = []
        self.pulls = pulls or {}
        self.every = every

    def pull_request_of(self, sha: str) -> int | None:
        self.looked_up.append(sha)
        return self.pulls.get(sha, self.every)

    def approvers(self, number: int) -> tuple[str, ...]:
        self.asked.append(number)
        return ("bob", "carol")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


MERGED = "Merge pull request 'podinfo 6.7.1' (#7) from feature into main"


def released(tmp_path: Path, forge: object, message: str) -> LedgerEntry:
    server, sha, ledger = notes_repository(tmp_path)
    stage, _ = promotions(server, tmp_path, ledger)
    store = MemoryStore()
    rendered = render_app(server.work, "staging", "podinfo", revision=sha)
    result = replace(
        staging_release(server.work, rendered, sha, Result.SUCCEEDED),
        snapshot=Snapshot(Commit(sha, "Dana", message, 0.0), server.work),
    )
    LedgerSink(stage, History(store), store, forge=forge).write(result)  # type: ignore[arg-type]
    (line,) = ledger.read()[sha]
    return line


def test_a_release_through_a_pull_request_notes_who_approved_it(tmp_path: Path) -> None:
    forge = Reviews(every=7)
    line = released(tmp_path, forge, MERGED)
    assert (line.approvals, line.approved_by, forge.asked) == (Approvals.KNOWN, ("bob", "carol"), [7])


def test_a_commit_message_naming_a_pull_request_the_forge_does_not_know_claims_no_approvals(tmp_path: Path) -> None:
    """A direct push titled like a squash merge ("hotfix (#7)") must not borrow #7's reviewers."""
    forge = Reviews()
    line = released(tmp_path, forge, "hotfix (#7)")
    assert (line.approvals, line.approved_by, forge.asked) == (None, (), [])
    assert "approv" not in line.line


def test_a_forge_that_is_down_leaves_the_line_written_and_the_approvals_unknown(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token")
    down = ForgeClient(ForgeKind.GITEA, f"http://127.0.0.1:{closed_port()}", "org/deploy", token, clock=None)  # type: ignore[arg-type]
    line = released(tmp_path, down, MERGED)
    assert line.outcome is ReleaseOutcome.SUCCEEDED, "the release is noted all the same"
    assert (line.approvals, line.approved_by) == (Approvals.UNKNOWN, ())
    assert '"approvals":"unknown"' in line.line and "secret-token" not in line.line


class Hung:
    """A forge whose every call times out."""

    def __init__(self) -> None:
        self.calls = 0

    def pull_request_of(self, sha: str) -> int | None:
        self.calls += 1
        raise TransientError("forge: timed out after 10 s")

    def approvers(self, number: int) -> tuple[str, ...]:
        self.calls += 1
        raise TransientError("forge: timed out after 10 s")


def test_a_forge_that_does_not_answer_is_waited_on_once_not_once_per_line(tmp_path: Path) -> None:
    """A reconcile writing two lines (a Superseded one and its own) while the forge hangs waits one timeout."""
    server, first, ledger = notes_repository(tmp_path)
    stage, _ = promotions(server, tmp_path, ledger)
    later = server.commit({"README.md": "later\n"}, "Docs only")
    store = MemoryStore()
    result = staging_release(server.work, render_app(server.work, "staging", "podinfo", revision=first), first,
                             Result.SUCCEEDED)  # fmt: skip
    forge = Hung()
    sink = LedgerSink(stage, History(store), store, forge=forge)  # type: ignore[arg-type]
    assert sink._approvals(result, first) == (Approvals.UNKNOWN, ())
    assert sink._approvals(result, later) == (Approvals.UNKNOWN, ())
    assert forge.calls == 1, "not asked again for a minute after it did not answer"


def test_a_direct_push_records_nothing_about_approvals(tmp_path: Path) -> None:
    forge = Reviews()
    line = released(tmp_path, forge, "podinfo 6.7.1")
    assert (line.approvals, forge.asked) == (None, [])
    assert "approv" not in line.line


def test_a_release_a_later_commit_carried_on_records_who_approved_its_own_pull_request(tmp_path: Path) -> None:
    """The release ends (healthy) only at a later commit that renders it the same (a README change): the line is
    on the commit that brought the release, and the forge is asked about that one, though its message (merged by
    rebase) names no pull request and the reconcile's own message is another."""
    server, first, ledger = notes_repository(tmp_path)
    stage, _ = promotions(server, tmp_path, ledger)
    later = server.commit({"README.md": "later\n"}, "Docs only")
    store = MemoryStore()
    rendered = render_app(server.work, "staging", "podinfo", revision=first)
    rolling = Status("podinfo", "staging", first, rendered.digest, first, first, result=Result.PROGRESSING.value)
    result = replace(staging_release(server.work, rendered, later, Result.SUCCEEDED), previous=rolling)
    forge = Reviews({first: 7})
    LedgerSink(stage, History(store), store, forge=forge).write(result)  # type: ignore[arg-type]
    (line,) = ledger.read()[first]
    assert (line.approvals, line.approved_by, forge.looked_up) == (Approvals.KNOWN, ("bob", "carol"), [first])


def removal(at: str, previous: Status, started: float = 20.0) -> ReconcileResult:
    return ReconcileResult(
        key=KEY,
        kind=Kind.REMOVED,
        reasons=("poll",),
        started_at=started,
        finished_at=started + 1,
        snapshot=Snapshot(Commit(at, "Dana", "Remove podinfo from staging", 0.0), Path("/nonexistent")),
        target=Target("podinfo-staging", prune=True, self_heal=True, removed=True),
        previous=previous,
        outcome=Result.REMOVED,
    )


def test_a_removed_app_is_noted_once_on_its_last_release_and_audit_stops_listing_it_after(tmp_path: Path) -> None:
    server, first, ledger = notes_repository(tmp_path)
    stage, _ = promotions(server, tmp_path, ledger)
    store = MemoryStore()
    history = History(store)
    rendered = render_app(server.work, "staging", "podinfo", revision=first)
    sink = LedgerSink(stage, history, store)
    sink.write(staging_release(server.work, rendered, first, Result.SUCCEEDED))
    running = Status("podinfo", "staging", first, rendered.digest, first, first, result=Result.SUCCEEDED.value)
    history.set_status(KEY, "podinfo-staging", lambda _: running)

    env = (server.work / "environments/staging/env.yaml").read_text()
    dropped = server.commit({"environments/staging/env.yaml": env.replace("- podinfo", "- other")}, "Remove podinfo")
    later = server.commit({"README.md": "later\n"}, "A later commit")
    sink.write(removal(dropped, running))
    # Killed before the status said Removed, and done again once a later commit landed: the same line.
    sink.write(removal(later, running, started=40.0))
    # Killed after the status said so, before the inventory was dropped: nothing more to note.
    StatusSink(history).write(removal(dropped, running))
    sink.write(removal(later, history.status(KEY, "podinfo-staging"), started=60.0))

    notes = ledger.read()
    assert set(notes) == {first}, "noted on the release it ended, not on the commit the removal ran at"
    outcomes = [(e.outcome, e.removal_commit, e.digest) for e in notes[first]]
    assert outcomes == [(ReleaseOutcome.SUCCEEDED, "", rendered.digest), (ReleaseOutcome.REMOVED, dropped,
                                                                          rendered.digest)]  # fmt: skip
    assert history.status(KEY, "podinfo-staging").last_applied_digest == "", "a re-added app is a new release"

    commits = _commits(server, {first, dropped})
    rows = audit_rows(notes, commits)
    before, after = notes[first][0].finished_at + 1, notes[first][1].finished_at
    assert [r.entry.app for r in running_at(audit_rows(notes, commits, until=before))] == ["podinfo"]
    assert running_at(audit_rows(notes, commits, until=after)) == (), "not listed once removed"
    [row] = [r for r in rows if r.entry.outcome is ReleaseOutcome.REMOVED]
    assert row.evidence == f"Removed at {dropped[:12]} (Remove podinfo)"
    assert json.loads(json.dumps(row.to_json()))["removalCommit"] == dropped
    assert row.approvals == "", "a removal line says nothing of approvals"
    assert inconsistencies(notes, commits) == [], "a release that Succeeded and was then Removed is no contradiction"

    # Listed again, rendering exactly as before: a new release at the commit that brought it back, running again.
    back = server.commit({"environments/staging/env.yaml": env}, "Bring podinfo back")
    again = staging_release(
        server.work, rendered, back, Result.SUCCEEDED, previous=history.status(KEY, "podinfo-staging")
    )
    sink.write(replace(again, started_at=90.0, finished_at=100.0))
    notes = ledger.read()
    assert [e.outcome for e in notes[back]] == [ReleaseOutcome.SUCCEEDED]
    rows = audit_rows(notes, _commits(server, {first, dropped, back}))
    assert [r.commit for r in running_at(rows)] == [back]


def test_a_removed_line_the_remote_did_not_take_outlives_a_kill_and_is_written_once_after(tmp_path: Path) -> None:
    """The remote is away when the app is removed and the agent is killed before it is back: the ``Removed`` line
    waits in the status, and the emptied inventory stays so the next agent finds the app departed again; its
    removal, done again (the status says Removed: only the kept line is left), writes the line once, and only
    then is the inventory dropped."""
    server, first, _ = notes_repository(tmp_path)
    store = MemoryStore()
    history = History(store)
    rendered = render_app(server.work, "staging", "podinfo", revision=first)
    running = Status("podinfo", "staging", first, rendered.digest, first, first, result=Result.SUCCEEDED.value)
    history.set_status(KEY, "podinfo-staging", lambda _: running)
    store.save(KEY, "podinfo-staging", inventories.PART, {"objects": []}, "")  # emptied by the prune
    env = (server.work / "environments/staging/env.yaml").read_text()
    dropped = server.commit({"environments/staging/env.yaml": env.replace("- podinfo", "- other")}, "Remove podinfo")

    def agent(name: str) -> tuple[LedgerSink, NotesLedger]:
        ledger = NotesLedger(
            GitRepository(server.url, "main", tmp_path / name).cache, server.url, identity=Identity("g", "g@x")
        )
        return LedgerSink(promotions(server, tmp_path, ledger)[0], history, store, retry_after=3600), ledger

    killed, _ = agent("first")
    away = server.bare.rename(tmp_path / "away")
    killed.write(removal(dropped, running))
    StatusSink(history).write(removal(dropped, running))
    killed.retries.close(0)  # killed: its background retry is gone with it
    status = history.status(KEY, "podinfo-staging")
    [kept] = status.unnoted
    assert status.result == Result.REMOVED.value and json.loads(kept)["outcome"] == "Removed"
    removals.forget(store, KEY, "podinfo-staging", lines_kept=bool(status.unnoted))
    assert inventories.departed(store, "staging", "podinfo-staging", ["other"]) == {KEY}, "found again"

    away.rename(server.bare)
    second, ledger = agent("second")
    again = replace(removal(dropped, status, started=60.0), kind=Kind.UP_TO_DATE, outcome=None)
    second.write(again)
    second.write(again)  # a status read before the line was written: the ledger keeps one line
    [line] = [e for e in ledger.read()[first] if e.outcome is ReleaseOutcome.REMOVED]
    assert line.to_line() == kept and line.removal_commit == dropped, "written as it was made"
    status = history.status(KEY, "podinfo-staging")
    assert status.unnoted == () and status.result == Result.REMOVED.value
    removals.forget(store, KEY, "podinfo-staging", lines_kept=bool(status.unnoted))
    assert inventories.departed(store, "staging", "podinfo-staging", ["other"]) == frozenset(), "and then gone"


def _commits(server: Server, shas: set[str]) -> dict[str, Any]:
    from gitsync.adapters.commits import read_commits

    def run(*args: str, istream: Any = None, **_: Any) -> str:
        import subprocess

        done = subprocess.run(["git", *args], cwd=server.work, stdin=istream, capture_output=True, text=True)
        return done.stdout

    git(server.work, "fetch", "-q", "origin")
    return read_commits(run, shas)
