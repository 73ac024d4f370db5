"""``file("name")`` and ``files("pattern")``: text from the chart's ``files/`` folder, included verbatim.

Helm's ``.Files.Get`` and ``(.Files.Glob ...).AsConfig``: a Grafana dashboard or a rules file whose ``{{ }}``
belongs to another program is kept in ``apps/<app>/files/`` and placed into a template as it is, never read as
Jinja. Reads only regular files inside that folder (names without ``..``; no symlink out), each at most
``MAX_VALUE_CHARS``; the same name gives the same text for the whole render.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from renderers.chart import list_files
from renderers.errors import UnreadableText, read_utf8
from renderers.filters import FilterError
from renderers.limits import MAX_VALUE_CHARS, bounded_join


class ChartFiles:
    """The files of one chart's ``files/`` folder, read on first use and cached for the render."""

    def __init__(self, root: Path, shown: str) -> None:
        self.root = root
        self.shown = shown
        """``apps/<app>/files/``, as messages name it."""
        self._text: dict[str, str] = {}

    def get(self, name: str) -> str:
        """The text of ``files/<name>``; a missing or unreadable file fails the render naming it."""
        name = str(name)
        text = self._text.get(name)
        if text is None:
            text = self._text[name] = self._read(name)
        return text

    def glob(self, pattern: str) -> dict[str, str]:
        """``{base name: text}`` of every file whose path (relative to ``files/``) matches ``pattern``, sorted.

        Shaped for a ConfigMap's ``data`` (``files("dashboards/*.json") | toYaml``), as Helm's ``AsConfig``.
        """
        found: dict[str, str] = {}
        names = list_files(self.root) if self.root.is_dir() else []
        for name in names:
            if fnmatch.fnmatchcase(name, str(pattern)):
                base = name.rpartition("/")[2]
                if base in found:
                    raise FilterError(f"files: {pattern!r} matches two files named {base!r} in {self.shown}")
                found[base] = self.get(name)
        bounded_join(found.values())
        return found

    def _read(self, name: str) -> str:
        parts = name.split("/")
        if not name or "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise FilterError(f"file: {name!r} is not a path inside {self.shown} (no '..', not absolute)")
        path = self.root.joinpath(*parts)
        try:
            inside = path.resolve(strict=True).is_relative_to(self.root.resolve(strict=True))
            size = path.stat().st_size if inside and path.is_file() else -1
        except (OSError, RuntimeError):
            size = -1
        if size < 0:
            raise FilterError(f"file: no file {name!r} in {self.shown}")
        if size > MAX_VALUE_CHARS:
            raise FilterError(f"file: {self.shown}{name} is larger than {MAX_VALUE_CHARS} bytes")
        try:
            return read_utf8(path)
        except UnreadableText as exc:  # not UTF-8 (the size was checked above)
            raise FilterError(f"file: {self.shown}{name}:{exc.line}: {exc.problem}") from None
