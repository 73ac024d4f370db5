"""YAML in and out, without YAML 1.1 surprises. Pure, no I/O.

Reading (values files, env.yaml, rendered manifests) parses with libyaml (``CSafeLoader``'s C parser) and
builds plain Python values itself:

* A plain scalar that YAML 1.1 would silently turn into something else keeps the text the author wrote:
  ``on``/``off``/``yes``/``no`` stay strings (only ``true``/``false`` are booleans), ``12:30:00`` is not
  base-60, ``2024-01-01`` is not a date, and a float that would lose digits (``1.10``, ``.5``) stays a string.
  In values files ``0644``/``0x1F``/``1_000`` also stay strings; in rendered manifests they read as YAML 1.1
  integers, as kubectl reads them (``defaultMode: 0644`` is 420).
* Duplicate mapping keys are errors, not "last one wins"; so are tags other than YAML's core ones (``!!binary``,
  ``!!set``, ``!custom``), and alias expansion ("billion laughs") past ``MAX_NODES`` values or past a number of
  characters (keys and scalars, counted as they are built: ``MAX_VALUE_CHARS`` for values, ``MAX_OUTPUT_CHARS``
  for a rendered document), since a document is only as small as it is when written out again.
* Rendered manifests get string keys only, so every object is JSON-ready.

Writing (``toYaml``, ``gitsync render``) is block style with sorted keys. A string is written plain only when
every common reader (PyYAML, and the goyaml.v2 behind kubectl and Helm, which also reads ``y``/``n`` as booleans
and ``1e3`` as a number) reads it back as the same string; otherwise it is quoted. Multi-line strings use
literal blocks. The writer handles the JSON data model only (what manifests and values are made of).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import yaml

from renderers.limits import MAX_OUTPUT_CHARS, MAX_VALUE_CHARS

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_NODES = 200_000
"""Most values one document may expand to, aliases included (about 40 MiB of Python objects)."""

_SHARED_BUDGET: ContextVar[list[int] | None] = ContextVar("gitsync_yaml_nodes", default=None)


@contextmanager
def node_budget(nodes: int) -> Iterator[None]:
    """Every document read in this block (in this thread) draws from one budget of ``nodes`` values, so many
    documents are bounded as one is: the render of an app holds all of its objects at once."""
    token = _SHARED_BUDGET.set([nodes, nodes])
    try:
        yield
    finally:
        _SHARED_BUDGET.reset(token)


_BOOL_TRUE = frozenset({"true", "True", "TRUE"})
_BOOL_FALSE = frozenset({"false", "False", "FALSE"})
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?\Z")
_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_RESOLVED: dict[tuple[Any, str, tuple[bool, bool]], str] = {}


class YamlError(ValueError):
    """Invalid YAML, a duplicate key or an unsupported tag; ``line`` is 1-based within the text that was read."""

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def _as_written_bool(text: str) -> bool | str:
    if text in _BOOL_TRUE:
        return True
    if text in _BOOL_FALSE:
        return False
    return text  # yes/no/on/off


def _as_written_int(text: str) -> int | str:
    return int(text) if _DECIMAL.match(text) else text


def _kubectl_int(text: str) -> int | str:
    """YAML 1.1 integers (``0644`` octal, ``0x1F``, ``0b101``, ``1_000``) except base 60, which goyaml.v2 skips."""
    if _DECIMAL.match(text):
        return int(text)
    if _SEXAGESIMAL.match(text):
        return text
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits.startswith(("0b", "0x")):
        return sign * int(digits[2:], 2 if digits[1] == "b" else 16)
    return sign * int(digits, 8 if digits.startswith("0") and len(digits) > 1 else 10)


def _as_written_float(text: str) -> float | str:
    if _SEXAGESIMAL.match(text):
        return text
    try:
        number = float(text)
    except ValueError:  # .inf, .nan, 1_000.5: nothing JSON carries faithfully
        return text
    written = repr(number)
    # "1.0e-05" is how YAML writers (ours included) spell 1e-05, since YAML 1.1 needs the dot.
    return number if text.lstrip("+") in (written, written.replace("e", ".0e", 1)) else text


def _identity(text: str) -> str:
    return text


def _null(_text: str) -> None:
    return None


_VALUES_SCALARS: Mapping[str, Callable[[str], Any]] = {
    _TAG + "str": _identity,
    _TAG + "null": _null,
    _TAG + "bool": _as_written_bool,
    _TAG + "int": _as_written_int,
    _TAG + "float": _as_written_float,
    _TAG + "timestamp": _identity,
    _TAG + "value": _identity,
}
_MANIFEST_SCALARS: Mapping[str, Callable[[str], Any]] = {**_VALUES_SCALARS, _TAG + "int": _kubectl_int}


class _Reader(_Loader):  # type: ignore[misc,valid-type]
    """libyaml's parser and composer; values are built by ``_Builder``, not by PyYAML's (slow) constructor."""

    def resolve(self, kind: Any, value: str, implicit: tuple[bool, bool]) -> str:
        # Memoised: the same keys and values recur in every object, and resolving runs regexes in Python.
        key = (kind, value, implicit)
        tag = _RESOLVED.get(key)
        if tag is None:
            tag = str(super().resolve(kind, value, implicit))
            if len(_RESOLVED) < 100_000:
                _RESOLVED[key] = tag
        return tag


class _Builder:
    """Plain dicts, lists and scalars from a composed node tree."""

    def __init__(
        self, reader: _Reader, scalars: Mapping[str, Callable[[str], Any]], string_keys: bool, max_chars: int
    ) -> None:
        self.reader = reader
        self.scalars = scalars
        self.string_keys = string_keys
        self.nodes = 0
        self.chars_left = max_chars
        self.shared = _SHARED_BUDGET.get()

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > 200:
            raise YamlError("document too large or too deeply nested (alias expansion?)", node.start_mark.line + 1)
        if self.shared is not None:
            self.shared[0] -= 1
            if self.shared[0] < 0:
                raise YamlError(f"more than {self.shared[1]} values in all documents", node.start_mark.line + 1)
        if type(node) is yaml.ScalarNode:
            self.chars_left -= len(node.value)
            if self.chars_left < 0:
                raise YamlError("document too large when its aliases are expanded", node.start_mark.line + 1)
            convert = self.scalars.get(node.tag)
            if convert is None:
                raise YamlError(f"unsupported YAML tag {node.tag}", node.start_mark.line + 1)
            return convert(node.value)
        if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
            return [self.build(child, depth + 1) for child in node.value]
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            if _MERGE in {key.tag for key, _ in node.value}:
                self.reader.flatten_mapping(node)
            mapping: dict[Any, Any] = {}
            plain_keys = self.string_keys  # the common case inline: this loop runs for every key of every object
            for key_node, value_node in node.value:
                if plain_keys and type(key_node) is yaml.ScalarNode:
                    key = key_node.value
                    self.chars_left -= len(key)
                else:
                    key = self.key(key_node, depth)
                if key in mapping:
                    raise YamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
                mapping[key] = self.build(value_node, depth + 1)
            return mapping
        raise YamlError(f"unsupported YAML tag {node.tag}", node.start_mark.line + 1)

    def key(self, node: yaml.Node, depth: int) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise YamlError("a mapping key must be a scalar", node.start_mark.line + 1)
        return str(node.value) if self.string_keys else self.build(node, depth + 1)


def _translate(exc: yaml.YAMLError) -> YamlError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return YamlError(str(exc.problem or exc.context or "invalid YAML"), mark.line + 1 if mark else 1)
    return YamlError(str(exc).splitlines()[0], 1)


def load_values(text: str) -> Any:
    """One YAML document with author-faithful scalars (values files, ``fromYaml``, ``--set``)."""
    return load_values_with_lines(text)[0]


def load_values_with_lines(text: str, *, nested: bool = False) -> tuple[Any, dict[str, int]]:
    """Like ``load_values``, plus the 1-based line of each top-level key, so a bad setting can be pointed at.

    With ``nested``, every key and list item at any depth, by dotted path (``promotion.mode``, ``apps.1``); a
    key that itself holds dots may share its dotted path with a nested one, and then the first keeps the line.
    """
    reader = _Reader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[str, int] = {}
        if nested:
            _key_lines(node, "", lines, 0)
        elif isinstance(node, yaml.MappingNode):
            lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
        return _Builder(reader, _VALUES_SCALARS, string_keys=False, max_chars=MAX_VALUE_CHARS).build(node), lines
    except yaml.YAMLError as exc:
        raise _translate(exc) from None
    finally:
        reader.dispose()


def _key_lines(node: yaml.Node, path: str, lines: dict[str, int], depth: int) -> None:
    if depth > 200:  # the builder reports the document as too deep
        return
    children: list[tuple[str, yaml.Node, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        children = [(str(key.value), key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)]
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(index), item, item) for index, item in enumerate(node.value)]
    for name, at, child in children:
        sub = f"{path}.{name}" if path else name
        lines.setdefault(sub, at.start_mark.line + 1)
        _key_lines(child, sub, lines, depth + 1)


def load_manifests(text: str) -> Iterator[tuple[int, Any]]:
    """Every document of rendered output as ``(start line, data)``; empty documents come out as ``None``."""
    reader = _Reader(text)
    try:
        while reader.check_node():
            node = reader.get_node()
            if node is None:
                yield 1, None
                continue
            data = _Builder(reader, _MANIFEST_SCALARS, string_keys=True, max_chars=MAX_OUTPUT_CHARS).build(node)
            yield node.start_mark.line + 1, data
    except yaml.YAMLError as exc:
        raise _translate(exc) from None
    finally:
        reader.dispose()


# ---- writing -------------------------------------------------------------------------------------------------

# goyaml.v2 (kubectl, Helm) reads these as booleans or numbers although PyYAML reads them as strings.
_GOYAML_EXTRA = re.compile(r"(?:[yYnN]|[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+)\Z")
# Characters a plain scalar may hold anywhere (conservative: ASCII, no YAML indicators that need context).
_PLAIN = re.compile(
    r"[A-Za-z0-9_./$()+=~^;@%,:<>\-](?:[A-Za-z0-9_./$()+=~^;@%,:<>\- ]*[A-Za-z0-9_./$()+=~^;@%<>\-])?\Z"
)
_PLAIN_FIRST = frozenset("@%:-,>")
_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0", "\x1b": "\\e"}


def _reads_as_other_type(text: str) -> bool:
    if text == "" or _GOYAML_EXTRA.match(text):
        return True
    return any(tag != _TAG + "str" and regexp.match(text) for tag, regexp in _IMPLICIT.get(text[0], ()))


def _double_quoted(text: str) -> str:
    """Escapes whatever Python does not call printable (controls, NEL, line separators, BOM, surrogates):
    a subset of what YAML allows unescaped, so the result is always valid and always reads back exactly."""
    out = []
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_STRINGS: dict[str, str] = {}


def _string(text: str) -> str:
    """A one-line scalar: plain when unambiguous, else single-quoted, else double-quoted with escapes."""
    written = _STRINGS.get(text)
    if written is None:
        written = _write_string(text)
        if len(text) < 256 and len(_STRINGS) < 100_000:  # keys and short values recur in every object
            _STRINGS[text] = written
    return written


def _write_string(text: str) -> str:
    if (
        _PLAIN.match(text)
        and not (text[0] in _PLAIN_FIRST and (len(text) == 1 or text[1] == " " or text[0] != "-"))
        and ": " not in text
        and " #" not in text
        and not _reads_as_other_type(text)
    ):
        return text
    if text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


def _block(text: str) -> str | None:
    """The header of a literal block for a multi-line string, or ``None`` when a block cannot carry it exactly."""
    if (
        text[0] in " \n"
        or not text.replace("\n", "").replace("\t", "").isprintable()
        or " \n" in text
        or "\t\n" in text
    ):
        return None
    body = text.rstrip("\n")
    if not body or body.endswith((" ", "\t")):
        return None
    trailing = len(text) - len(body)
    return "|-" if trailing == 0 else "|" if trailing == 1 else "|+"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value).lower()
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _emit(value: Any, indent: int, out: list[str], prefix: str) -> None:
    """Append ``value`` as block YAML; ``prefix`` is what precedes it on its first line (``key:`` or ``- ``)."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        first = True
        for key in sorted(value):
            head = (prefix if first else pad) + _string(str(key)) + ":"
            first = False
            _emit_value(value[key], indent, out, head)
    elif isinstance(value, list | tuple) and value:
        for index, item in enumerate(value):
            head = (prefix if index == 0 else pad) + "- "
            if isinstance(item, dict | list | tuple) and item:
                _emit(item, indent + 2, out, head)
            else:
                _emit_value(item, indent, out, head.rstrip(" "))
    else:
        out.append(
            prefix + ("{}" if isinstance(value, dict) else "[]" if isinstance(value, list | tuple) else "") + "\n"
        )


def _emit_value(value: Any, indent: int, out: list[str], head: str) -> None:
    """``head`` (``key:`` or ``-``) followed by ``value``: inline when scalar, nested below when a collection."""
    if isinstance(value, dict) and value:
        out.append(head + "\n")
        _emit(value, indent + 2, out, " " * (indent + 2))
    elif isinstance(value, list | tuple) and value:
        out.append(head + "\n")
        _emit(value, indent, out, " " * indent)
    elif isinstance(value, dict):
        out.append(head + " {}\n")
    elif isinstance(value, list | tuple):
        out.append(head + " []\n")
    elif isinstance(value, str) and "\n" in value and (style := _block(value)) is not None:
        inner = " " * (indent + 2)
        lines = value.rstrip("\n").split("\n") + [""] * (len(value) - len(value.rstrip("\n")) - 1)
        out.append(head + " " + style + "\n" + "".join((inner + line if line else "") + "\n" for line in lines))
    else:
        out.append(head + " " + _scalar(value) + "\n")


def dump(data: Any, *, explicit_start: bool = False) -> str:
    """Block-style YAML with sorted keys: the one way gitsync writes YAML (``toYaml`` and ``gitsync render``).

    Takes the JSON data model as plain ``dict``/``list``/``tuple`` and scalars.
    """
    out: list[str] = ["---\n"] if explicit_start else []
    if isinstance(data, dict | list | tuple) and data:
        _emit(data, 0, out, "")
    elif isinstance(data, str) and "\n" in data and (style := _block(data)) is not None:
        lines = data.rstrip("\n").split("\n") + [""] * (len(data) - len(data.rstrip("\n")) - 1)
        out.append(style + "\n" + "".join(("  " + line if line else "") + "\n" for line in lines))
    else:
        out.append(_emit_scalar_document(data))
    return "".join(out)


def _emit_scalar_document(data: Any) -> str:
    if isinstance(data, dict):
        return "{}\n"
    if isinstance(data, list | tuple):
        return "[]\n"
    return _scalar(data) + "\n"
