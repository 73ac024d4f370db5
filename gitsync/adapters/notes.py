"""``NotesLedger``: the release ledger (``gitsync.ledger``) in the git notes ref ``refs/notes/gitsync``.

Implements ``ports.Ledger`` in the agent's bare cache (``GitRepository.cache``) or a person's clone
(``gitwrite.local_session``). Contract:
- never drops another writer's line: the remote's notes are fetched into ``refs/notes/gitsync-remote`` and
  merged with ``git notes merge -s cat_sort_uniq`` (the union of both notes' lines) before anything is added or
  pushed, and the push is never forced; a push refused because the remote moved is merged and tried again, up to
  ``ATTEMPTS`` times; refused while it did not move is ``WriteAccessError``;
- idempotent: a line whose release ending (``LedgerEntry.ending``) the note already holds (after the merge) is not
  added again, so a process killed between the append and the push leaves one line, pushed by the next call, and
  one killed after the push but before its status said so notes nothing twice;
- the notes themselves are tiny blobs keyed by commit id: the noted commit need not be present locally.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

from gitsync import log as logging
from gitsync.adapters.git import GitError
from gitsync.adapters.gitwrite import ATTEMPTS, Identity, Run, Session, WriteAccessError
from gitsync.ledger import NOTES_REF, LedgerEntry, parse_note

__all__ = ["REMOTE_COPY", "NotesLedger"]

REMOTE_COPY = "refs/notes/gitsync-remote"
"""Where the remote's notes land before they are merged into ``NOTES_REF``."""

log = logging.get("gitsync.notes")


class NotesLedger:
    """The ledger of one repository; ``remote`` (a URL or remote name; empty for none) is where it is shared."""

    def __init__(
        self, session: Session, remote: str, *, identity: Identity | None = None, attempts: int = ATTEMPTS
    ) -> None:
        self._session = session
        self._remote = remote
        self._environment = identity.environment() if identity else {}
        self._attempts = attempts

    def append(self, sha: str, entry: LedgerEntry) -> None:
        line = entry.to_line()
        with tempfile.TemporaryDirectory(prefix="gitsync-note-") as scratch, self._session(**self._environment) as run:
            for _ in range(self._attempts):
                remote = self._pull(run)
                current = _note(run, sha)
                if entry.ending not in {held.ending for held in parse_note(current)}:
                    note = Path(scratch) / "note"
                    note.write_text(current + ("\n" if current and not current.endswith("\n") else "") + line + "\n")
                    run("notes", "--ref", NOTES_REF, "add", "--force", "-F", str(note), sha)
                if not self._remote or _ref(run, NOTES_REF) == remote:
                    return
                try:
                    run("push", "--quiet", "--end-of-options", self._remote, f"{NOTES_REF}:{NOTES_REF}")
                    return
                except GitError as e:
                    if self._remote_notes(run) == remote:
                        raise WriteAccessError(
                            f"{NOTES_REF}: push refused (no write access, or a hook or rule refused it): {e}"
                        ) from None
        raise GitError(f"{NOTES_REF}: the remote's notes moved under each of {self._attempts} pushes; retrying later")

    def read(self, shas: Iterable[str] | None = None) -> Mapping[str, tuple[LedgerEntry, ...]]:
        wanted = None if shas is None else set(shas)
        with tempfile.TemporaryDirectory(prefix="gitsync-note-") as scratch, self._session(**self._environment) as run:
            self._pull(run)
            if not _ref(run, NOTES_REF):
                return {}
            blobs = {}
            for line in run("notes", "--ref", NOTES_REF, "list").splitlines():
                blob, _, commit = line.partition(" ")
                if wanted is None or commit in wanted:
                    blobs[blob] = commit
            texts = _blob_texts(run, list(blobs), Path(scratch))
        entries = {}
        for blob, commit in blobs.items():
            found = parse_note(texts.get(blob, ""), partial(_skipped, commit))
            if found:
                entries[commit] = found
        return entries

    def _remote_notes(self, run: Run) -> str:
        out = run("ls-remote", "--end-of-options", self._remote, NOTES_REF)
        return out.partition("\t")[0].strip()

    def _pull(self, run: Run) -> str:
        """Merge the remote's notes into ours; the remote's notes commit ("" when it has none, or no remote)."""
        if not self._remote:
            return ""
        remote = self._remote_notes(run)
        if not remote:
            return ""
        run(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--end-of-options",
            self._remote,
            f"+{NOTES_REF}:{REMOTE_COPY}",
        )
        if not _ref(run, NOTES_REF):
            run("update-ref", NOTES_REF, remote)
        else:
            run("notes", "--ref", NOTES_REF, "merge", "--quiet", "--strategy=cat_sort_uniq", REMOTE_COPY)
        return remote


def _skipped(commit: str, problem: str) -> None:
    log.warning("notes.skipped", commit=commit, problem=problem)


def _ref(run: Run, ref: str) -> str:
    return run("for-each-ref", "--format=%(objectname)", ref).strip()


def _note(run: Run, sha: str) -> str:
    """The note on ``sha`` ("" when none: ``notes list`` fails for a commit without one)."""
    try:
        blob = run("notes", "--ref", NOTES_REF, "list", "--end-of-options", sha).strip()
    except GitError:
        return ""
    return run("cat-file", "blob", blob, strip_newline_in_stdout=False)


def _blob_texts(run: Run, blobs: list[str], scratch: Path) -> dict[str, str]:
    """The text of each blob, read by one ``cat-file --batch`` (sizes count bytes, so the output is re-encoded
    with the escapes the decoding used)."""
    if not blobs:
        return {}
    request = scratch / "blobs"
    request.write_text("".join(f"{blob}\n" for blob in blobs))
    with request.open("rb") as stdin:
        data = run("cat-file", "--batch", istream=stdin, strip_newline_in_stdout=False).encode(
            "utf-8", "surrogateescape"
        )
    texts = {}
    position = 0
    while position < len(data):
        end = data.index(b"\n", position)
        name, _, size = data[position:end].decode().partition(" blob ")
        position = end + 1 + int(size) + 1
        texts[name] = data[end + 1 : end + 1 + int(size)].decode("utf-8", "replace")
    return texts
