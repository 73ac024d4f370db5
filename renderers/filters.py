"""Helm's template vocabulary as Jinja filters, with Helm's semantics. Pure, deterministic.

Helm passes the subject last (``trimPrefix "v" .Values.tag``); Jinja pipes it first
(``values.tag | trimPrefix("v")``). Otherwise each filter behaves as its Helm namesake; where Jinja has a
builtin of the same name with different behaviour (``default``, ``indent``, ``title``), Helm's wins.
``include``, ``tpl`` and ``config_hash`` need the render in progress and live in ``renderers.render``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import jinja2

from renderers.limits import bounded_join, check_format, check_items, check_size, check_str_method, check_width
from renderers.yamlio import YamlError, dump, load_values


class FilterError(ValueError):
    """A filter was given something it cannot work with; the message names the filter."""


class RequiredValueMissing(ValueError):
    """``required`` met an undefined, null or empty value; the message is the chart author's."""


def defined(value: Any) -> Any:
    """``value``, or the strict undefined error naming its path (``undefined value values.image.tag``)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _text(value: Any) -> str:
    value = defined(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_yaml(value: Any) -> str:
    """Block YAML, sorted keys, no trailing newline; strings that would read back as another type are quoted."""
    text = dump(plain(defined(value)))
    return text.rstrip("\n")


def to_json(value: Any) -> str:
    """Compact JSON with sorted keys (Helm's ``toJson``), not HTML-escaped like Jinja's ``tojson``."""
    try:
        return json.dumps(plain(defined(value)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"toJson: {exc}") from None


def plain(value: Any) -> Any:
    """Plain dicts and lists all the way down, failing on an undefined value anywhere inside."""
    value = defined(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def from_yaml(text: Any) -> Any:
    """Parse YAML as values files are parsed (``on`` stays ``"on"``); an error names the line inside ``text``."""
    try:
        return load_values(_text(text))
    except YamlError as exc:
        raise FilterError(f"fromYaml: line {exc.line}: {exc.problem}") from None


def indent(text: Any, width: int) -> str:
    """Helm's ``indent``: every line, the first included, gets ``width`` spaces."""
    lines = _text(text)
    check_width(len(lines) + width * (lines.count("\n") + 1))
    pad = " " * width
    return pad + lines.replace("\n", "\n" + pad)


def nindent(text: Any, width: int) -> str:
    """Helm's ``nindent``: a newline, then ``indent``; the idiom for placing a block after ``key:``."""
    return "\n" + indent(text, width)


def quote(value: Any) -> str:
    """A double-quoted YAML (and JSON) string, escapes included; ``null`` becomes ``""``."""
    return json.dumps(_text(value), ensure_ascii=False)


def squote(value: Any) -> str:
    """A single-quoted YAML string (a quote inside is doubled, as YAML requires)."""
    return "'" + _text(value).replace("'", "''") + "'"


def b64enc(value: Any) -> str:
    return base64.b64encode(_text(value).encode()).decode("ascii")


def b64dec(value: Any) -> str:
    try:
        return base64.b64decode(_text(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise FilterError(f"b64dec: not base64-encoded UTF-8 text: {exc}") from None


def default(value: Any, fallback: Any) -> Any:
    """Helm's ``default``: ``fallback`` when ``value`` is undefined or empty (null, "", 0, false, [], {}).

    As in Helm, ``replicas: 0 | default(2)`` gives 2; test with ``is none`` where zero is meaningful.
    """
    if isinstance(value, jinja2.Undefined) or not value:
        return fallback
    return value


def required(value: Any, message: str) -> Any:
    """``value``, or a render error carrying ``message`` when it is undefined, null or ""."""
    if isinstance(value, jinja2.Undefined) or value is None or value == "":
        raise RequiredValueMissing(message)
    return value


_WORD_START = re.compile(r"(?:^|(?<=\W))(\w)")


def title(value: Any) -> str:
    """Helm's ``title``: upper-case the first letter of each word, leave the rest as written."""
    return _WORD_START.sub(lambda m: m.group(1).upper(), _text(value))


def trunc(value: Any, length: int) -> str:
    """Helm's ``trunc``: the first ``length`` characters, or the last ``-length`` when negative."""
    text = _text(value)
    return text[length:] if length < 0 else text[:length]


def trim_prefix(value: Any, prefix: str) -> str:
    return _text(value).removeprefix(prefix)


def trim_suffix(value: Any, suffix: str) -> str:
    return _text(value).removesuffix(suffix)


def replace(value: Any, old: str, new: str, count: int = -1) -> str:
    text = _text(value)
    check_str_method(text, "replace", (str(old), str(new)), {})
    return text.replace(str(old), str(new), count)


def sha256sum(value: Any) -> str:
    return hashlib.sha256(_text(value).encode()).hexdigest()


def join(values: Any, separator: str = "") -> str:
    """Jinja's ``join`` with the size limit applied while joining."""
    return bounded_join((_text(v) for v in defined(values)), str(separator))


def center(value: Any, width: int = 80) -> str:
    check_width(width)
    return _text(value).center(width)


MAX_WRAP_CHARS = 100_000
"""Longest text ``wordwrap`` takes: Python's textwrap cuts a long word one line at a time, copying the rest each
time, so one word of a million characters wrapped at width 1 took 23 s (under a second at this size)."""


@jinja2.pass_environment
def wordwrap(
    environment: jinja2.Environment,
    value: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's ``wordwrap``, refused before wrapping when the ``wrapstring`` put between the lines would make the
    text too large (``wordwrap(1, true, s)`` puts all of ``s`` after each character)."""
    text = _text(value)
    if len(text) > MAX_WRAP_CHARS:
        raise FilterError(
            f"wordwrap: {len(text)} characters, more than the {MAX_WRAP_CHARS} it wraps (breaking a long word "
            "takes time that grows with the square of its length, inside one call the time limit cannot stop)"
        )
    between = environment.newline_sequence if wrapstring is None else str(wrapstring)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    check_width(len(text) + lines * len(between))
    return jinja2.filters.do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


@jinja2.pass_environment
def sum_(environment: jinja2.Environment, iterable: Any, attribute: str | int | None = None, start: Any = 0) -> Any:
    """Jinja's ``sum``; lists are added by extending one list, since Python's ``sum`` copies the total so far at
    every item (100,000 one-item lists took 15 s inside one call the render's time limit cannot stop)."""
    if attribute is not None:
        iterable = map(jinja2.filters.make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, list):
        return sum(iterable, start)
    total = list(start)
    for item in iterable:
        if not isinstance(item, list):
            raise TypeError(f'can only concatenate list (not "{type(item).__name__}") to list')
        total.extend(item)
        check_items(len(total))
    return total


def format_(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's ``format`` (printf-style) with the width limit."""
    text = _text(value)
    check_format(text, kwargs or args, each_once=not kwargs)
    return check_size(text % (kwargs or args))  # type: ignore[no-any-return]


FILTERS: Mapping[str, Callable[..., Any]] = {
    "toYaml": to_yaml,
    "toJson": to_json,
    "fromYaml": from_yaml,
    "indent": indent,
    "nindent": nindent,
    "quote": quote,
    "squote": squote,
    "b64enc": b64enc,
    "b64dec": b64dec,
    "default": default,
    "d": default,
    "required": required,
    "title": title,
    "trunc": trunc,
    "trimPrefix": trim_prefix,
    "trimSuffix": trim_suffix,
    "replace": replace,
    "sha256sum": sha256sum,
    "join": join,
    "center": center,
    "wordwrap": wordwrap,
    "sum": sum_,
    "format": format_,
}
"""Registered on every chart environment, replacing Jinja builtins of the same name."""
