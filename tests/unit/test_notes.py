"""The ledger in git notes against real repositories: writers merge, nothing is lost, nothing is doubled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from gitrepos import Server, git
from test_ledger import entry

from gitsync.adapters.git import GitRepository
from gitsync.adapters.gitwrite import Identity, Run, WriteAccessError
from gitsync.adapters.notes import NotesLedger
from gitsync.ledger import ReleaseOutcome

AGENT = Identity("gitsync", "gitsync@example.com")


def ledger(server: Server, cache: Path, **kwargs: object) -> NotesLedger:
    repo = GitRepository(server.url, "main", cache)
    return NotesLedger(repo.cache, repo.url, identity=AGENT, **kwargs)  # type: ignore[arg-type]


def remote_note(server: Server, sha: str) -> list[str]:
    return git(server.bare, "notes", "--ref", "gitsync", "show", sha).splitlines()


@pytest.fixture
def server(tmp_path: Path) -> Server:
    server = Server(tmp_path / "server")
    server.commit({"apps/podinfo/values.yaml": "replicas: 1\n"}, "first")
    return server


def interrupting(session: Callable[..., object], before_push: Callable[[], None]) -> Callable[..., object]:
    """``session`` whose first push is preceded by ``before_push`` (another writer getting there first)."""

    @contextmanager
    def wrapped(**environment: str) -> Iterator[Run]:
        with session(**environment) as run:  # type: ignore[attr-defined]

            def run_(verb: str, *args: str, **options: object) -> str:
                if verb == "push" and not fired:
                    fired.append(True)
                    before_push()
                return str(run(verb, *args, **options))

            yield run_

    fired: list[bool] = []
    return wrapped


def test_two_writers_racing_keep_every_line(server: Server, tmp_path: Path) -> None:
    sha = server.head()
    first, second = entry(revision=sha), entry(revision=sha, env="prod")
    other = ledger(server, tmp_path / "b")
    repo = GitRepository(server.url, "main", tmp_path / "a")
    racing = NotesLedger(
        interrupting(repo.cache, lambda: other.append(sha, second)),  # type: ignore[arg-type]
        repo.url,
        identity=AGENT,
    )
    racing.append(sha, first)  # its first push is refused (the other writer pushed in between): merged, pushed again
    assert sorted(remote_note(server, sha)) == sorted([first.to_line(), second.to_line()])
    assert ledger(server, tmp_path / "c").read([sha]) == {
        sha: tuple(sorted((first, second), key=lambda e: e.to_line()))
    }


def test_a_persons_own_note_line_survives(server: Server, tmp_path: Path) -> None:
    sha = server.head()
    git(server.work, "notes", "--ref", "gitsync", "add", "-m", "checked by hand: fine", sha)
    git(server.work, "push", "-q", "origin", "refs/notes/gitsync")
    ledger(server, tmp_path / "a").append(sha, entry(revision=sha))
    assert sorted(remote_note(server, sha)) == sorted(["checked by hand: fine", entry(revision=sha).to_line()])
    assert ledger(server, tmp_path / "b").read() == {sha: (entry(revision=sha),)}, "the hand-written line is skipped"


def test_appending_again_after_a_kill_before_the_push_adds_nothing(server: Server, tmp_path: Path) -> None:
    sha = server.head()
    repo = GitRepository(server.url, "main", tmp_path / "a")

    def killed() -> None:
        raise SystemExit("killed between the append and the push")

    with pytest.raises(SystemExit):
        NotesLedger(interrupting(repo.cache, killed), repo.url, identity=AGENT).append(sha, entry(revision=sha))  # type: ignore[arg-type]
    restarted = NotesLedger(repo.cache, repo.url, identity=AGENT)
    restarted.append(sha, entry(revision=sha))
    restarted.append(sha, entry(revision=sha))
    assert remote_note(server, sha) == [entry(revision=sha).to_line()]
    later = entry(revision=sha, outcome=ReleaseOutcome.ROLLED_BACK, finished_at=1_700_000_500.0)
    restarted.append(sha, later)
    assert remote_note(server, sha) == [entry(revision=sha).to_line(), later.to_line()]


def test_a_restarted_agent_noting_the_same_ending_again_adds_nothing(server: Server, tmp_path: Path) -> None:
    sha = server.head()
    ledger(server, tmp_path / "a").append(sha, entry(revision=sha, agent="gitsync-0/101"))
    # Killed after the push and before its status: the restarted agent notes the same ending at a later time.
    ledger(server, tmp_path / "b").append(sha, entry(revision=sha, agent="gitsync-0/202", finished_at=1_700_000_900.0))
    assert remote_note(server, sha) == [entry(revision=sha, agent="gitsync-0/101").to_line()]


def test_a_refused_push_is_a_write_access_error(server: Server, tmp_path: Path) -> None:
    hook = server.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'notes are read-only here' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(
        WriteAccessError,
        match=r"^refs/notes/gitsync: push refused \(no write access, or a hook or rule refused it\): .*server.git",
    ):
        ledger(server, tmp_path / "a").append(server.head(), entry())


def test_lines_appended_at_once_go_out_together_and_git_reads_them(server: Server, tmp_path: Path) -> None:
    """Many app-envs finishing at once (a commit touching all of them): every caller's line is on the remote when
    it returns, under notes of as many commits, whichever caller wrote them; ``git notes`` reads them all."""
    shas = [server.head()] + [server.commit({f"apps/a{i}/values.yaml": "x: 1\n"}, f"c{i}") for i in range(40)]
    shared = ledger(server, tmp_path / "a")
    lines = {sha: entry(revision=sha, app=f"a{i}") for i, sha in enumerate(shas)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda sha: shared.append(sha, lines[sha]), shas))
    for sha in (shas[0], shas[20], shas[-1]):
        assert remote_note(server, sha) == [lines[sha].to_line()]
    assert ledger(server, tmp_path / "b").read() == {sha: (line,) for sha, line in lines.items()}
    pushes = int(git(server.bare, "rev-list", "--count", "refs/notes/gitsync"))
    assert pushes < len(shas), "lines waiting were written together"
