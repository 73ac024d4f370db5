"""Size and time limits every render obeys, so a chart cannot exhaust the agent's memory or stall a worker. Pure.

A Kubernetes object is at most about 1.5 MiB in etcd; the limits leave room for that with margin. Sizes are
checked before or while a value is built, never after: a list of ten references to a list of ten references ...
is small in memory but expands to gigabytes when printed, so containers are measured as they would be written
(``expanded_size``), sharing included, and the measure stops as soon as it passes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any

from gitsync.ports import WHOLE_FILE_BYTES

MAX_INPUT_BYTES = WHOLE_FILE_BYTES
"""Largest repository file the renderer reads (values, env.yaml, chart.yaml, a template, a helper or a plain
manifest): single-file upstream installs fit (Argo CD's ``install.yaml`` is about 1.9 MB), as do ``file()``'s
``MAX_VALUE_CHARS``. The largest file a snapshot keeps whole, by definition: snapshots cut larger files to one
byte more (``gitsync.ports.WHOLE_FILE_BYTES``), so a render reading one fails at it as it would on the whole."""
MAX_VALUE_CHARS = 4 * 1024 * 1024
"""Largest string or container (as written out) an operator, filter, call, literal or values file may build."""
MAX_OUTPUT_CHARS = 8 * 1024 * 1024
"""Largest output of one app's render, all its templates together (so of one template too), counted as it is
produced; also the most characters one rendered document may expand to."""
MAX_RENDER_NODES = 200_000
"""Most values (mapping entries, list items, scalars) all the objects of one app's render may hold: about
2,000 Deployments, or 20,000 small ConfigMaps; about 60 MiB of Python objects at most."""
MAX_ITEMS = MAX_RENDER_NODES
"""Most items a list, mapping or sequence made while rendering may hold, counted as they are made: a Python
object costs 50-100 bytes where its text costs a few characters, so ``"ab" * 2000000 | batch(1) | list``, inside
``MAX_VALUE_CHARS``, peaked at 442 MiB before the size check saw the result."""
MAX_RENDER_SECONDS = 10.0
"""CPU time one app's render may take (``renderers.sandbox.time_limit``)."""

_WHITESPACE = dict.fromkeys(c for c in range(0x3001) if chr(c).isspace())
"""What ``str.split()`` splits on (every whitespace code point is below U+3001), mapped to deletion."""
_HUGE_WIDTH = re.compile(r"[{%][^{}%]*?\d{7,}")
_FIELD = re.compile(r"[{%]([^{}%]*)")
_DIGITS = re.compile(r"\d+")
_NESTED_FIELD = re.compile(r"\{[^{}:]*:[^{}]*\{")  # "{0:{1}}": a width or precision from an argument


class OutputTooLarge(Exception):
    """A value or the output of a template grew past the limits. Reported like the sandbox's ``SecurityError``
    ("not allowed in templates"), without deriving from it: this module is imported by renders the cache answers,
    which do not load Jinja."""


def check_size(value: Any) -> Any:
    """``value`` unchanged, unless it is a string, list, tuple or mapping past ``MAX_VALUE_CHARS`` as written out."""
    if isinstance(value, list | tuple | Mapping):
        expanded_size(value)
    elif isinstance(value, Sized) and len(value) > MAX_VALUE_CHARS:
        raise OutputTooLarge(f"value too large: {len(value)} items or characters (limit {MAX_VALUE_CHARS})")
    return value


_ITEM_OVERHEAD = 4
"""Characters around each item when written: quotes and ``, `` (repr, JSON), ``- `` or ``: `` and a newline (YAML)."""


def expanded_size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``value`` takes written out (``str()``, JSON or block YAML, whichever is longest),
    counting a container as often as it is referenced; ``OutputTooLarge`` as soon as that passes ``limit``.

    Runs in time proportional to the *distinct* containers (each is measured once), so a hostile value is
    refused without being expanded. YAML indents every line of a nested block by two more spaces, so a
    container's size counts its lines too.
    """
    measured: dict[int, tuple[int, int, Any]] = {}  # id -> (chars, lines, the object, kept alive so ids stay unique)

    def measure(node: Any, depth: int) -> tuple[int, int]:
        if isinstance(node, str):
            return len(node) + _ITEM_OVERHEAD, 1
        if isinstance(node, int):  # bool included; digits estimated, since str() of a huge int is itself costly
            return node.bit_length() // 3 + 1 + _ITEM_OVERHEAD, 1
        if not isinstance(node, list | tuple | Mapping):  # a float, None, an undefined value, a macro
            return 24 + _ITEM_OVERHEAD, 1
        known = measured.get(id(node))
        if known is not None:
            return known[0], known[1]
        if depth > 1000:
            raise OutputTooLarge("value nested more than 1000 levels deep")
        chars, lines = 2 + _ITEM_OVERHEAD, 1
        children = node.items() if isinstance(node, Mapping) else ((None, item) for item in node)
        for key, child in children:
            key_chars = 0 if key is None else len(str(key)) + _ITEM_OVERHEAD
            child_chars, child_lines = measure(child, depth + 1)
            chars += key_chars + child_chars + 2 * child_lines
            lines += child_lines
            if chars > limit:
                raise OutputTooLarge(f"value too large: more than {limit} characters when written out")
        measured[id(node)] = (chars, lines, node)
        return chars, lines

    return measure(value, 0)[0]


def check_width(*numbers: Any) -> None:
    """Refuse widths and counts that would build a value past the limit (``center(10**9)``)."""
    for number in numbers:
        if isinstance(number, int) and number > MAX_VALUE_CHARS:
            raise OutputTooLarge(f"width or count {number} is too large (limit {MAX_VALUE_CHARS})")


def check_format(text: str, values: Any = (), *, each_once: bool = False) -> None:
    """Refuse a ``%``/``format``/``printf`` template with a seven-digit width (``"%0999999999d"``), or one whose
    result could pass the limit, before the one C call that builds it: every field padded to the widest width
    written, plus ``values`` (the arguments) printed once when ``each_once`` (positional ``%``: each field takes
    the next one), else once per field (``("{0}" * 100000).format(s)``, ``%(name)s``)."""
    if _HUGE_WIDTH.search(text):
        raise OutputTooLarge("format width is too large")
    fields = text.count("%") + text.count("{")
    if fields:
        # every number of a field (width and precision: "%1.999999f" prints a million digits), and the arguments a
        # "*" or a nested field takes its width or precision from ("%*s" % (100000000, s), "{:{}}".format(s, n))
        widest = 10 ** max((len(run) for spec in _FIELD.findall(text) for run in _DIGITS.findall(spec)), default=0)
        if "*" in text or _NESTED_FIELD.search(text):
            widest = max(widest, *_int_arguments(values), 0)
        printed = expanded_size(values) * (1 if each_once else fields)
        check_width(len(text) + fields * widest + printed)


def _int_arguments(values: Any) -> Iterator[int]:
    """The integers among a format's arguments (``values`` as ``check_format`` takes them), as sizes."""
    for value in values if isinstance(values, tuple) else (values,):
        inner = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple) else (value,)
        yield from (abs(v) for v in inner if isinstance(v, int))


def check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse ``text.<name>(...)`` when its result could pass the limit, before it is built: ``replace``,
    ``join``, ``expandtabs``, ``translate``, ``format`` and ``format_map`` grow a string in one C call that the
    render's limits cannot stop midway (``s.replace("a", s)`` of 100,000 characters asks for 10 GB)."""
    n = len(text)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        check_width(n + text.count(old) * (len(new) - len(old)) if old else n + (n + 1) * len(new))
    elif name == "join" and args and isinstance(args[0], list | tuple | str):
        parts = args[0]
        check_width(sum(len(p) for p in parts if isinstance(p, str)) + n * max(len(parts) - 1, 0))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        check_width(n + text.count("\t") * (size if isinstance(size, int) else 0))
    elif name == "translate" and args:
        table = args[0]
        entries = table.values() if isinstance(table, Mapping) else table if isinstance(table, list | tuple) else ()
        check_width(n * max((len(e) for e in entries if isinstance(e, str)), default=1))
    elif name in ("format", "format_map"):
        check_format(text, (args, dict(kwargs)))
    elif name in ("split", "rsplit"):
        separator = args[0] if args else kwargs.get("sep")
        if isinstance(separator, str) and separator:
            check_items(text.count(separator) + 1)
        elif separator is None:  # runs of whitespace: at most one part more than there are whitespace characters
            check_items(n - len(text.translate(_WHITESPACE)) + 1)
    elif name == "splitlines":
        check_items(text.count("\n") + text.count("\r") + 1)


def check_items(count: int) -> None:
    """Refuse making a list or mapping of ``count`` items when that is more than ``MAX_ITEMS``."""
    if count > MAX_ITEMS:
        raise OutputTooLarge(f"more than {MAX_ITEMS} items in one list or mapping")


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
