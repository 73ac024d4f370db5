"""Size limits every template value and output obeys, so a chart cannot exhaust the agent's memory. Pure.

A Kubernetes object is at most about 1.5 MiB in etcd; the limits leave room for that with margin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sized
from typing import Any

from jinja2.exceptions import SecurityError

MAX_VALUE_CHARS = 4 * 1024 * 1024
"""Largest string or list an operator, filter or call may build."""
MAX_OUTPUT_CHARS = 16 * 1024 * 1024
"""Largest output of one template file."""

_HUGE_WIDTH = re.compile(r"[{%][^{}%]*?\d{7,}")


class OutputTooLarge(SecurityError):
    """A value or the output of a template grew past the limits."""


def check_size(value: Any) -> Any:
    """``value`` unchanged, unless it is a string or sequence past ``MAX_VALUE_CHARS``."""
    if isinstance(value, Sized) and not isinstance(value, Mapping) and len(value) > MAX_VALUE_CHARS:
        raise OutputTooLarge(f"value too large: {len(value)} items or characters (limit {MAX_VALUE_CHARS})")
    return value


def check_width(*numbers: Any) -> None:
    """Refuse widths and counts that would build a value past the limit (``center(10**9)``)."""
    for number in numbers:
        if isinstance(number, int) and number > MAX_VALUE_CHARS:
            raise OutputTooLarge(f"width or count {number} is too large (limit {MAX_VALUE_CHARS})")


def check_format(text: str) -> None:
    """Refuse ``%``/``format`` templates with a seven-digit width (``"%0999999999d"``)."""
    if _HUGE_WIDTH.search(text):
        raise OutputTooLarge("format width is too large")


def bounded_join(parts: Iterable[Any], separator: str = "") -> str:
    """``separator.join(str(p) ...)`` that stops as soon as the result would pass the limit."""
    strings: list[str] = []
    total = 0
    for part in parts:
        text = str(part)
        total += len(text) + len(separator)
        if total > MAX_VALUE_CHARS + len(separator):
            raise OutputTooLarge(f"value too large: more than {MAX_VALUE_CHARS} characters")
        strings.append(text)
    return separator.join(strings)
