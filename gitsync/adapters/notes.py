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
- the notes themselves are tiny blobs keyed by commit id: the noted commit need not be present locally;
- with a ``sign`` signer (the agent's ``repo.write.signingKeyFile``, ``gitsync.adapters.ledger_signature``)
  each line carries its signature as the last key (``gitsync.ledger.with_signature``), signed once, when the
  line is made (``sign``: before the status may keep it, ``record.LedgerSink``); an entry that comes with its
  line is written as that text only if its signature is this signer's own (``SshLineSigner.owns``), else it is
  refused (``ForeignLineError``), never signed: a status anyone editing ConfigMaps in the environment's
  namespace can change must not get a line signed; ``read`` returns every line (each entry keeps its text),
  what to trust is the reader's call.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from gitsync import log as logging
from gitsync.adapters.git import GitError
from gitsync.adapters.gitwrite import ATTEMPTS, Identity, Run, Session, WriteAccessError
from gitsync.adapters.ledger_signature import SshLineSigner
from gitsync.ledger import NOTES_REF, ForeignLineError, LedgerEntry, parse_note, split_signature, with_signature

__all__ = ["REMOTE_COPY", "NotesLedger"]

REMOTE_COPY = "refs/notes/gitsync-remote"
"""Where the remote's notes land before they are merged into ``NOTES_REF``."""

log = logging.get("gitsync.notes")


@dataclass(slots=True)
class _Ticket:
    """One line waiting to be written by ``NotesLedger.append``."""

    sha: str
    entry: LedgerEntry
    line: str
    """The line as written (signed when the ledger signs)."""
    done: bool = False
    error: Exception | None = None


class NotesLedger:
    """The ledger of one repository; ``remote`` (a URL or remote name; empty for none) is where it is shared."""

    def __init__(
        self,
        session: Session,
        remote: str,
        *,
        identity: Identity | None = None,
        attempts: int = ATTEMPTS,
        sign: SshLineSigner | None = None,
    ) -> None:
        """``sign``: signs each line made and knows its own signature (unsigned lines when None)."""
        self._session = session
        self._sign = sign
        self._remote = remote
        self._environment = identity.environment() if identity else {}
        self._attempts = attempts
        self._waiting: list[_Ticket] = []
        self._waiting_lock = threading.Lock()
        self._writing = threading.Lock()
        """Held by the one caller writing a batch; the others wait for it, then find their line written."""

    def append(self, sha: str, entry: LedgerEntry) -> None:
        """Add ``entry`` to the note of ``sha`` and push it; returns once it is on the remote. Concurrent calls
        are written together (a group commit: one fetch, merge and push for all the lines waiting), so many
        app-envs finishing at once cost one push, not one each; each caller still returns only after its line
        was pushed, or raises what the push raised; ``ForeignLineError`` for a line made before that this ledger
        will not write (``_line``)."""
        ticket = _Ticket(sha, entry, self._line(entry))
        with self._waiting_lock:
            self._waiting.append(ticket)
        with self._writing:
            if not ticket.done:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                try:
                    self._write(batch)
                except Exception as e:  # every caller of the batch raises it, not only the one that wrote
                    for waiting in batch:
                        waiting.error = e
                    raise
                finally:
                    for waiting in batch:
                        waiting.done = True
        if ticket.error is not None:
            raise ticket.error

    def _write(self, batch: list[_Ticket]) -> None:
        """Merge the remote's notes, add the batch's new lines in one commit, push; a fixed number of git
        processes whatever the batch size (the notes read by one ``cat-file --batch``, written by one
        ``fast-import``, which keeps the notes tree's fan-out)."""
        with tempfile.TemporaryDirectory(prefix="gitsync-note-") as scratch, self._session(**self._environment) as run:
            for _ in range(self._attempts):
                remote = self._pull(run)
                notes = dict(_notes_of(run, {ticket.sha for ticket in batch}, Path(scratch)))
                endings = {sha: {held.ending for held in parse_note(text)} for sha, (_, text) in notes.items()}
                changed = set()
                for ticket in batch:  # each note parsed once: one commit's note may hold a line per app-env
                    path, current = notes.get(ticket.sha, (ticket.sha, ""))
                    held = endings.setdefault(ticket.sha, set())
                    if ticket.entry.ending not in held:
                        held.add(ticket.entry.ending)
                        separator = "\n" if current and not current.endswith("\n") else ""
                        notes[ticket.sha] = (path, current + separator + ticket.line + "\n")
                        changed.add(ticket.sha)
                if changed:
                    self._commit(run, [notes[sha] for sha in sorted(changed)], Path(scratch))
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

    def sign(self, entry: LedgerEntry) -> LedgerEntry:
        """``entry`` with its line made, signed now when this ledger signs (an entry that has its line already is
        returned as it is)."""
        if entry.line:
            return entry
        line = entry.to_line()
        return replace(entry, line=with_signature(line, self._sign(line)) if self._sign is not None else line)

    def _line(self, entry: LedgerEntry) -> str:
        """The text ``entry`` is written as. An entry made before (kept in ``Status.unnoted``) is written as the
        very line it was made as (parsing times back to floats would not always give the same milliseconds):
        unsigned when this ledger does not sign; when it does, only if signed by this ledger's key, as is."""
        if not entry.line:
            return self.sign(entry).line
        try:
            line, signature = split_signature(entry.line)
        except ValueError as e:
            raise ForeignLineError(f"{entry.env}/{entry.app} at {entry.revision[:12]}: {e}") from None
        if self._sign is None:
            return line
        if not signature or not self._sign.owns(entry.line):
            what = "unsigned" if not signature else "not signed by this agent's key, or changed since"
            raise ForeignLineError(f"{entry.env}/{entry.app} at {entry.revision[:12]}: the line is {what}")
        return entry.line

    def _commit(self, run: Run, notes: list[tuple[str, str]], scratch: Path) -> None:
        """One commit on ``NOTES_REF`` writing each (path, text) of ``notes`` into the notes tree, as ``git notes
        add`` would (by path, so the noted commit need not be present, as with ``git notes``)."""
        name = self._environment.get("GIT_COMMITTER_NAME", "gitsync")
        email = self._environment.get("GIT_COMMITTER_EMAIL", "gitsync@noreply.invalid")
        message = f"Notes added by gitsync ({len(notes)})\n".encode()
        stream = [f"commit {NOTES_REF}\ncommitter {name} <{email}> now\n".encode()]
        stream.append(b"data %d\n%s" % (len(message), message))
        parent = _ref(run, NOTES_REF)
        if parent:
            stream.append(f"from {parent}\n".encode())
        for path, text in notes:
            data = text.encode()
            stream.append(f"M 100644 inline {path}\n".encode() + b"data %d\n%s\n" % (len(data), data))
        request = scratch / "fast-import"
        request.write_bytes(b"".join(stream) + b"\n")
        with request.open("rb") as stdin:
            run("fast-import", "--quiet", "--date-format=now", istream=stdin)

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


def _notes_of(run: Run, shas: set[str], scratch: Path) -> Mapping[str, tuple[str, str]]:
    """The notes on ``shas``: commit -> (its path in the notes tree, text); a commit without one is absent. One
    ``ls-tree`` and one ``cat-file --batch``: the path keeps the tree's fan-out (``ab/cdef...``) when rewritten."""
    if not _ref(run, NOTES_REF):
        return {}
    found = {}
    for line in run("ls-tree", "-r", "--full-tree", "--end-of-options", NOTES_REF).splitlines():
        meta, _, path = line.partition("\t")
        commit = path.replace("/", "")
        if commit in shas:
            found[meta.split()[2]] = (commit, path)
    texts = _blob_texts(run, list(found), scratch)
    return {commit: (path, texts.get(blob, "")) for blob, (commit, path) in found.items()}


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
