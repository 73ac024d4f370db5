"""The command line's render cache on disk: ``$XDG_CACHE_HOME/gitsync/render/<key>``, holding the bytes
``renderers.cache.StoredRenderCache`` encodes (this adapter never looks inside them).

One file per render key, written whole: the bytes go to a temporary file in the same folder and are renamed over
the entry, so a reader never sees half an entry and concurrent writers of one key simply replace each other with
the same output. Each entry starts with a BLAKE2b digest of the rest: a truncated, bit-flipped or foreign file is
a miss (and removed), never a wrong render. The folder is bounded (``MAX_BYTES``): after a write, the least
recently used entries (a hit refreshes an entry's modification time) are removed until it fits again.

``GITSYNC_RENDER_CACHE=off`` turns it off (``disk_blobs`` returns None).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from gitsync.adapters.trees import user_cache_dir

__all__ = ["MAX_BYTES", "DiskBlobs", "disk_blobs"]

MAX_BYTES = 512 * 1024 * 1024
"""Bound of the folder: about a hundred renders of a 5 MB repository, a few thousand of ordinary apps."""
_DIGEST = 32
_MAGIC = b"gitsync-render\n"


def disk_blobs() -> DiskBlobs | None:
    """The user's render cache folder, or None when ``GITSYNC_RENDER_CACHE=off``."""
    if os.environ.get("GITSYNC_RENDER_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    return DiskBlobs(user_cache_dir() / "render")


class DiskBlobs:
    """Bytes by key in a folder (``renderers.cache.Blobs``); every I/O problem is a miss or a skipped write."""

    def __init__(self, folder: Path, max_bytes: int = MAX_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def read(self, key: str) -> bytes | None:
        entry = self.folder / key
        try:
            data = entry.read_bytes()
        except OSError:
            return None
        head, digest, body = (
            data[: len(_MAGIC)],
            data[len(_MAGIC) : len(_MAGIC) + _DIGEST],
            data[len(_MAGIC) + _DIGEST :],
        )
        if head != _MAGIC or hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
            self.discard(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(entry)
        return body

    def discard(self, key: str) -> None:
        with contextlib.suppress(OSError):
            (self.folder / key).unlink()

    def write(self, key: str, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        data = _MAGIC + hashlib.blake2b(body, digest_size=_DIGEST).digest() + body
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                Path(temporary).replace(self.folder / key)
            except BaseException:
                with contextlib.suppress(OSError):
                    Path(temporary).unlink()
                raise
            self._bound()
        except OSError:
            return  # a full disk or a read-only home: the render stands, uncached

    def _bound(self) -> None:
        """Remove the least recently used entries until the folder holds at most ``max_bytes``."""
        entries = []
        with os.scandir(self.folder) as found:
            for entry in found:
                with contextlib.suppress(OSError):
                    info = entry.stat()
                    entries.append((info.st_mtime_ns, info.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                return
            with contextlib.suppress(OSError):
                Path(path).unlink()
                total -= size
