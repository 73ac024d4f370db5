"""What a render reads, reduced to ids: the key of the render cache (``renderers.cache``).

``content_id`` is the Git object id of a file (a blob id) or a folder (a tree id) as Git computes it, over the
content the renderer would read: symbolic links inside the repository are followed (the renderer follows them,
so the id must change when their target does), hidden files count, empty folders do not (Git stores none); a
link out of the repository makes the inputs unkeyable (the render then runs uncached and reports it). For a
folder of a commit without symbolic links it is exactly ``git rev-parse <commit>:<path>``, so the agent's
snapshots and a local checkout key a chart the same way, and a folder that is not in Git at all still gets an id
that changes exactly when its content does. A file past ``MAX_INPUT_BYTES`` is an exception: snapshots keep it cut
to one byte more (``gitsync.ports.WHOLE_FILE_BYTES``), so such a chart's id there differs from Git's. That key is
still sound, as the render depends on no more than that: it reads none of the file, or fails at it either way.

``uses_revision`` says whether a chart's templates may read ``release.revision``: when they cannot, the commit
being deployed is not an input of the render, and a commit that touched another app re-renders nothing here.

Pure apart from reading the files; no Git, no clock.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

__all__ = ["Unkeyable", "content_id", "uses_revision"]

_FILE, _EXECUTABLE, _TREE = b"100644", b"100755", b"40000"


class Unkeyable(Exception):
    """The inputs cannot be reduced to an id (a link loop, a file vanishing mid-walk): render without the cache."""


def content_id(path: Path, root: Path) -> str:
    """The Git id of ``path`` with links followed (see the module doc); ``""`` when nothing is there.

    ``Unkeyable`` for a link leading out of ``root`` (the repository): the renderer refuses to read through such
    a link, and the key must not walk the file system behind it either."""
    top = os.path.realpath(root)
    try:
        info = path.stat()
    except FileNotFoundError:
        return ""
    except OSError as e:  # a link loop, a permission problem: the render reports it, the cache keeps out of it
        raise Unkeyable(f"{path}: {e}") from None
    _check_inside(path, top)
    if stat.S_ISDIR(info.st_mode):
        found = _tree(path, top, frozenset())
        return found.hex() if found is not None else _EMPTY_TREE
    return _blob(path, info.st_size).hex()


_EMPTY_TREE = hashlib.sha1(b"tree 0\x00", usedforsecurity=False).hexdigest()
_CHUNK = 1 << 20


def _check_inside(path: Path | str, top: str) -> None:
    real = os.path.realpath(path)
    if real != top and not real.startswith(top + os.sep):
        raise Unkeyable(f"{path}: leads out of the repository")


def _blob(path: Path | str, size: int) -> bytes:
    """Read in chunks: a large file the renderer never reads costs time here, not memory."""
    h = hashlib.sha1(b"blob %d\x00" % size, usedforsecurity=False)
    seen = 0
    try:
        with Path(path).open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                seen += len(chunk)
    except OSError as e:
        raise Unkeyable(f"{path}: {e}") from None
    if seen != size:
        raise Unkeyable(f"{path}: changed while read")
    return h.digest()


def _tree(path: Path, top: str, parents: frozenset[str]) -> bytes | None:
    """The tree id of folder ``path`` (raw bytes), None for a folder holding no file at any depth."""
    real = os.path.realpath(path)
    if real in parents:
        raise Unkeyable(f"{path}: symbolic link loop")
    inner = parents | {real}
    entries: list[tuple[bytes, bytes, bytes]] = []  # (sort name, mode, name + id)
    try:
        with os.scandir(path) as found:
            listed = sorted(found, key=lambda e: e.name)
    except OSError as e:
        raise Unkeyable(f"{path}: {e}") from None
    for entry in listed:
        name = os.fsencode(entry.name)
        try:
            info = entry.stat()  # follows links, as the renderer does
        except OSError as e:
            raise Unkeyable(f"{entry.path}: {e}") from None
        if entry.is_symlink():
            _check_inside(entry.path, top)
        if stat.S_ISDIR(info.st_mode):
            sub = _tree(Path(entry.path), top, inner)
            if sub is not None:
                entries.append((name + b"/", _TREE, name + b"\x00" + sub))
        elif stat.S_ISREG(info.st_mode):
            mode = _EXECUTABLE if info.st_mode & stat.S_IXUSR else _FILE
            entries.append((name, mode, name + b"\x00" + _blob(entry.path, info.st_size)))
    if not entries:
        return None
    entries.sort(key=lambda e: e[0])  # Git orders a folder as if its name ended in "/"
    body = b"".join(mode + b" " + rest for _, mode, rest in entries)
    return hashlib.sha1(b"tree %d\x00" % len(body) + body, usedforsecurity=False).digest()


_SAFE_RELEASE = r"(?:app|name|env|namespace)"
_REVISION_READ = re.compile(
    rf"\brelease\b(?!\s*\.\s*{_SAFE_RELEASE}\b)(?!\s*\[\s*['\"]{_SAFE_RELEASE}['\"]\s*\])|\btpl\b"
)
"""``release`` other than as ``release.<field>`` / ``release["<field>"]`` of a field that is not the revision
(passed whole to a macro or filter, iterated, dumped), or ``tpl`` (a template made of text the chart computes)."""


def uses_revision(*folders: Path) -> bool:
    """Whether any template or helper under ``folders`` may read ``release.revision``. Conservative: a file that
    cannot be read, or any use of ``release`` other than reading one of its other fields, counts as reading it."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for file in folder.rglob("*"):
            try:
                if not file.is_file():
                    continue
                text = file.read_text(errors="replace")
            except OSError:
                return True
            if _REVISION_READ.search(text):
                return True
    return False
