"""Editing ``environments/<env>/promoted.yaml``, the pins of a receiving environment, as gitsync writes them.

Contract: pure (text in, text out). A round trip through ruamel.yaml, so comments, key order and the entries of
other apps come out as a person left them; only the one app's entry is replaced. Every promoted value that is a
string is written double-quoted, so a tag such as ``"1.10"`` or ``"on"`` stays a string for every YAML reader.
The file is read by ``renderers.promotion.load_pins``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

__all__ = ["HEADER", "PromotedFileError", "with_pin"]

HEADER = "# written by gitsync; change it only in a reviewed pull request\n"


class PromotedFileError(ValueError):
    """The file holds something other than a mapping of app names to pins; nothing is rewritten."""


def with_pin(
    text: str | None, app: str, revision: str, from_env: str, values: Mapping[str, Any], *, override: str = ""
) -> str:
    """``text`` (None: no file yet) with ``app`` pinned to ``revision`` promoted from ``from_env``, carrying
    exactly ``values`` (earlier promoted values of the app are replaced, not merged); ``override`` is the reason a
    pin was forced without upstream evidence (dropped from the entry when empty)."""
    yaml = _yaml()
    document = yaml.load(text) if text and text.strip() else None
    if document is None:
        document = CommentedMap()
        if text is None or not text.strip():
            document.yaml_set_start_comment(HEADER.removeprefix("# ").rstrip("\n"))
    if not isinstance(document, CommentedMap):
        raise PromotedFileError(f"promoted.yaml: expected a mapping of apps to pins, found {type(document).__name__}")
    entry = document.get(app)
    if not isinstance(entry, CommentedMap):
        entry = CommentedMap()
        document[app] = entry
    entry["revision"] = revision
    entry["from"] = from_env
    entry["values"] = _quoted(values)
    if override:
        entry["override"] = DoubleQuotedScalarString(" ".join(override.split()))
    else:
        entry.pop("override", None)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def _yaml() -> YAML:
    yaml = YAML()  # round-trip
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    yaml.preserve_quotes = True
    return yaml


def _quoted(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _quoted(item)
        return out
    if isinstance(value, list | tuple):
        return [_quoted(item) for item in value]
    if isinstance(value, str):
        return DoubleQuotedScalarString(value)
    return value
