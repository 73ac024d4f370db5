"""Secret values out of every string that leaves the process. Pure, no I/O.

The API server quotes a refused value in its error message (a Secret with ``stringData: {pin: 73317331}``, an
unquoted number, is refused with ``...stringData.pin: expected string, got ...73317331...``), and such messages
go to logs, status, history, Events and the state ConfigMap. So every value of a rendered Secret, as written and
as base64 (``data`` is base64; ``stringData`` is plain), is replaced by ``***`` wherever it appears. Values
shorter than ``MIN_CHARS`` are left alone: scrubbing ``1`` or ``on`` would garble every message and hide nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["MIN_CHARS", "scrub", "secret_values", "secret_values_of"]

MIN_CHARS = 4
MASK = "***"


def secret_values(body: Any) -> tuple[str, ...]:
    """The strings that reveal a value of ``body`` if it is a Secret (longest first; empty for other objects)."""
    if not isinstance(body, dict) or body.get("kind") != "Secret":
        return ()
    found: set[str] = set()
    for value in (body.get("data") or {}).values():
        text = str(value)
        found.add(text)
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):  # binary data: its base64 form is covered
            found.add(base64.b64decode(text, validate=True).decode())
    for value in (body.get("stringData") or {}).values():
        text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
        found.update((text, base64.b64encode(text.encode()).decode()))
    escaped = {json.dumps(text)[1:-1] for text in found}  # as quoted inside a JSON message
    return tuple(sorted((v for v in found | escaped if len(v) >= MIN_CHARS), key=len, reverse=True))


def secret_values_of(bodies: Iterable[Any]) -> tuple[str, ...]:
    """``secret_values`` of every object (e.g. ``m.body for m in rendered.manifests``), longest first."""
    found = {value for body in bodies for value in secret_values(body)}
    return tuple(sorted(found, key=len, reverse=True))


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with each of ``values`` (from ``secret_values``) replaced by ``***``."""
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text
