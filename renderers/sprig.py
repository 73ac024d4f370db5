"""The rest of Helm's vocabulary (Go template builtins and Sprig), with Helm's semantics. Pure, deterministic.

Each function takes Helm's arguments in Helm's order and is a template global: ``hasKey(values, "tag")`` is
``hasKey .Values "tag"``. Functions meant for pipelines are filters too, with the piped value passed last, exactly
as a Helm pipeline passes it: ``values.name | hasPrefix("web")`` is ``.Values.name | hasPrefix "web"``.

Values are immutable in the sandbox, so the functions that change a dict or list in Helm (``set``, ``unset``,
``merge``, ``mergeOverwrite``) return a new one instead: ``{% set labels = set(labels, "tier", "web") %}``.
Functions that read the clock, randomness, the environment or the network are refused (``REFUSED``), since a
render must be a function of its commit. Printing follows Go's ``%v`` (``[1 2 3]``, ``map[a:1]``, ``<nil>``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Protocol, cast

import jinja2
import re2
from jinja2.exceptions import SecurityError

from renderers.filters import FILTERS, FilterError, defined, plain
from renderers.limits import bounded_join, check_format, check_items, check_size, check_width
from renderers.yamlio import YamlError, load_values

# ---- Go's printing --------------------------------------------------------------------------------------------


def go_value(value: Any) -> str:
    """Go's ``%v`` of a template value: what ``toString``, ``print`` and ``printf "%v"`` give."""
    value = defined(value)
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_value(k)}:{go_value(value[k])}" for k in sorted(value, key=str)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    return str(value)


def _go_float(number: float) -> str:
    """Go's ``%v`` of a float64: the shortest representation, exponent from 1e21 (``3``, ``0.5``, ``1e+21``)."""
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if math.isnan(number):
        return "NaN"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" in text:
        mantissa, _, exponent = text.partition("e")
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}e{sign}{exponent.lstrip('+-').zfill(2)}"
    return text


def _number(value: float) -> float | int:
    """A float result as Go prints it and JSON-encodes it: whole numbers without ``.0``."""
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def printf(fmt: Any, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs charts use (``%s %d %v %q %t %f %e %g %x %X %o %b %c %%``).

    A wrong or missing argument prints as Go prints it (``%!d(string=x)``, ``%!s(MISSING)``).
    """
    text = str(defined(fmt))
    check_format(text, args, each_once="[" not in text)  # %[1]s prints an argument again
    out: list[str] = []
    position = 0
    index = 0
    for match in _VERB.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if index >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(defined(args[index]), flags, width, precision, verb))
        index += 1
    out.append(text[position:])
    if index < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_value(a)}" for a in args[index:])
        out.append(f"%!(EXTRA {extra})")
    return check_size("".join(out))  # type: ignore[no-any-return]


def _format_one(value: Any, flags: str, width: str | None, precision: str | None, verb: str) -> str:
    spec = flags.replace("#", "") + (width or "")
    if precision is not None:
        spec += "." + (precision or "0")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if verb in "sv":
        text = go_value(value)
        return format(text[: int(precision)] if precision and verb == "s" else text, _align(flags, width))
    if verb == "q" and isinstance(value, str):
        return format(json.dumps(value, ensure_ascii=False), _align(flags, width))
    if verb == "t" and isinstance(value, bool):
        return format("true" if value else "false", _align(flags, width))
    if verb in "dxXobc" and is_int:
        if verb == "c":
            return chr(value)
        return format(value, spec + {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb])
    if verb in "xX" and isinstance(value, str):
        return format(value.encode().hex().upper() if verb == "X" else value.encode().hex(), _align(flags, width))
    if verb in "feEgG" and (is_int or isinstance(value, float)):
        if verb in "gG" and precision is None:
            return format(_go_float(float(value)), _align(flags, width))
        spec += "" if precision is not None or verb not in "feE" else ".6"
        return format(float(value), spec + verb)
    return f"%!{verb}({_go_type(value)}={go_value(value)})"


def _align(flags: str, width: str | None) -> str:
    return ("<" if "-" in flags else ">") + (width or "")


def _go_type(value: Any) -> str:
    """Go's type name of a template value (``typeOf``)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return type(value).__name__


def _go_kind(value: Any) -> str:
    """Go's reflect kind of a template value (``kindOf``)."""
    if value is None:
        return "invalid"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "slice"
    return _go_type(value)


def go_print(*args: Any) -> str:
    """Go's ``print``: operands joined, with a space between two operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_value(arg))
    return bounded_join(out)


def go_println(*args: Any) -> str:
    return bounded_join((go_value(a) for a in args), " ") + "\n"


# ---- conversion and flow -----------------------------------------------------------------------------------------


def empty(value: Any) -> bool:
    """Sprig's ``empty``: undefined, null, ``""``, ``0``, ``false`` and empty lists and dicts are empty."""
    if isinstance(value, jinja2.Undefined) or value is None:
        return True
    if isinstance(value, bool | int | float | str | list | tuple | Mapping):
        return not value
    return False


def coalesce(*values: Any) -> Any:
    """The first argument that is not ``empty``, or null."""
    return next((v for v in values if not empty(v)), None)


def all_(*values: Any) -> bool:
    return all(not empty(v) for v in values)


def any_(*values: Any) -> bool:
    return any(not empty(v) for v in values)


def ternary(if_true: Any, if_false: Any, condition: Any) -> Any:
    return if_true if defined(condition) else if_false


def fail(message: Any) -> Any:
    raise FilterError(f"fail: {go_value(message)}")


def to_int(value: Any) -> int:
    """Sprig's ``int``/``int64`` (``cast.ToInt64``): numbers truncate, strings parse (``0x1F``, ``"12"``), else 0."""
    value = defined(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        text = value.strip()
        text = text[:-2] if text.endswith(".0") else text
        try:
            return int(text, 0)
        except ValueError:
            return 0
    return 0


def to_float(value: Any) -> float | int:
    """Sprig's ``float64`` (``cast.ToFloat64``): numbers and numeric strings, else 0."""
    value = defined(value)
    if isinstance(value, bool | int | float):
        return _number(float(value))
    if isinstance(value, str):
        try:
            return _number(float(value))
        except ValueError:
            return 0
    return 0


def atoi(value: Any) -> int:
    """Go's ``strconv.Atoi``: a decimal integer string, else 0."""
    try:
        return int(str(defined(value)), 10)
    except ValueError:
        return 0


# ---- strings -------------------------------------------------------------------------------------------------


def _s(value: Any) -> str:
    return go_value(value) if not isinstance(value, str) else value


def contains(substring: Any, text: Any) -> bool:
    return _s(substring) in _s(text)


def has_prefix(prefix: Any, text: Any) -> bool:
    return _s(text).startswith(_s(prefix))


def has_suffix(suffix: Any, text: Any) -> bool:
    return _s(text).endswith(_s(suffix))


def trim_all(cutset: Any, text: Any) -> str:
    return _s(text).strip(_s(cutset))


def substr(start: Any, end: Any, text: Any) -> str:
    """Sprig's ``substr``: ``start < 0`` means from the beginning, ``end < 0`` or past the end means to the end."""
    string, start, end = _s(text), to_int(start), to_int(end)
    if start < 0:
        return string[:end]
    if end < 0 or end > len(string):
        return string[start:]
    return string[start:end]


def split_list(separator: Any, text: Any) -> list[str]:
    sep, string = _s(separator), _s(text)
    check_items(string.count(sep) + 1 if sep else len(string))
    return string.split(sep) if sep else list(string)


def split(separator: Any, text: Any) -> dict[str, str]:
    """``split "$" "a$b"`` is ``{_0: a, _1: b}``, as in Sprig."""
    return {f"_{i}": part for i, part in enumerate(split_list(separator, text))}


def splitn(separator: Any, count: Any, text: Any) -> dict[str, str]:
    check_items(to_int(count))
    parts = _s(text).split(_s(separator), max(to_int(count) - 1, 0)) if to_int(count) > 0 else []
    return {f"_{i}": part for i, part in enumerate(parts)}


def cat(*values: Any) -> str:
    """The non-null arguments joined by spaces."""
    return bounded_join((go_value(v) for v in values if v is not None), " ")


def untitle(text: Any) -> str:
    return re.sub(r"(?:^|(?<=\s))(\w)", lambda m: m.group(1).lower(), _s(text))


def camelcase(text: Any) -> str:
    """``http_server`` -> ``HttpServer`` (xstrings ``ToCamelCase``, as Sprig)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\s-]+", _s(text)) if part)


def kebabcase(text: Any) -> str:
    """``FirstName`` -> ``first-name`` (xstrings ``ToKebabCase``, as Sprig)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", _s(text))
    return "-".join(w.lower() for w in words)


def sha1sum(text: Any) -> str:
    return hashlib.sha1(_s(text).encode(), usedforsecurity=False).hexdigest()


def base(path: Any) -> str:
    """Go's ``path.Base``: the last element, trailing slashes removed; ``.`` for an empty path."""
    text = _s(path).rstrip("/")
    if not _s(path):
        return "."
    return text.rpartition("/")[2] if text else "/"


def urlquery(*values: Any) -> str:
    return urllib.parse.quote_plus(go_print(*values), safe="")


def url_parse(url: Any) -> dict[str, str]:
    parts = urllib.parse.urlsplit(_s(url))
    userinfo = parts.netloc.rpartition("@")[0]
    return {
        "scheme": parts.scheme,
        "host": parts.netloc.rpartition("@")[2],
        "hostname": parts.hostname or "",
        "path": parts.path,
        "query": parts.query,
        "opaque": "",
        "fragment": parts.fragment,
        "userinfo": userinfo,
    }


# ---- regular expressions: RE2, as Go's regexp behind Helm's functions -------------------------------------------
# Linear in the text, never backtracking: with Python's re, a chart's regexMatch("^(a+)+$") on 34 characters ran
# for minutes inside one C call that the render's time limit cannot interrupt, holding the interpreter lock, so the
# whole agent (probes, leases, every other app) stood still. RE2 also refuses what Go's regexp refuses
# (backreferences, lookarounds), so a chart that renders here renders in Helm.

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the chart's error at its line, not a line on the agent's stderr


class _Regex(Protocol):
    """What the functions below use of a compiled RE2 program (google-re2 mirrors ``re.Pattern``)."""

    def search(self, text: str) -> Any: ...
    def finditer(self, text: str) -> Iterator[Any]: ...
    def sub(self, replacement: Callable[[Any], str], text: str) -> str: ...


@lru_cache(maxsize=256)
def _regex(pattern: str) -> _Regex:
    try:
        return cast(_Regex, re2.compile(pattern, _RE2_OPTIONS))
    except re2.error as exc:
        problem = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise FilterError(f"regex {pattern!r}: {problem}") from None


def regex_match(pattern: Any, text: Any) -> bool:
    return _regex(_s(pattern)).search(_s(text)) is not None


def regex_find(pattern: Any, text: Any) -> str:
    found = _regex(_s(pattern)).search(_s(text))
    return found.group(0) if found else ""


def regex_find_all(pattern: Any, text: Any, count: Any) -> list[str]:
    limit, string = to_int(count), _s(text)
    found: list[str] = []
    for match in _go_matches(_regex(_s(pattern)), string):
        if 0 <= limit <= len(found):
            break
        found.append(match.group(0))
        check_items(len(found))
    return found


_EXPAND = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")


def regex_replace_all(pattern: Any, text: Any, replacement: Any) -> str:
    """Go's ``ReplaceAllString``: ``$1``, ``${1}`` and ``${name}`` in ``replacement`` expand; ``$$`` is ``$``."""
    template = _s(replacement)
    produced = _Produced()

    def expand(found: Any) -> str:
        def group(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name is None:
                return "$"
            try:
                return found.group(int(name) if name.isdigit() else name) or ""
            except IndexError:  # Go expands an unknown group to nothing
                return ""

        return produced.add(_EXPAND.sub(group, template))

    return _replace_all(_regex(_s(pattern)), _s(text), expand)


def regex_replace_all_literal(pattern: Any, text: Any, replacement: Any) -> str:
    literal, produced = _s(replacement), _Produced()
    return _replace_all(_regex(_s(pattern)), _s(text), lambda _m: produced.add(literal))


def _replace_all(program: _Regex, text: str, replacement: Callable[[Any], str]) -> str:
    """``text`` with each of Go's matches (``_go_matches``) replaced by ``replacement(match)``."""
    parts: list[str] = []
    last = 0
    for match in _go_matches(program, text):
        parts += (text[last : match.start()], replacement(match))
        last = match.end()
    parts.append(text[last:])
    joined = "".join(parts)
    check_size(joined)
    return joined


class _Produced:
    """The replacements made so far, counted as they are made: the result is joined from them in one C call
    (``regexReplaceAll("", s, s)`` puts all of ``s`` at every position), so it is refused before that."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        self.chars = 0

    def add(self, replacement: str) -> str:
        self.chars += len(replacement)
        check_width(self.chars)
        return replacement


def regex_split(pattern: Any, text: Any, count: Any) -> list[str]:
    """Go's ``Regexp.Split``: ``count`` < 0 all parts, 0 none, n at most n parts. Only the text between matches
    (no capture groups, unlike Python's ``split``), and an empty match right after a match splits nothing."""
    n = to_int(count)
    if n == 0:
        return []
    expression, string = _s(pattern), _s(text)
    if expression and not string:
        return [""]
    parts: list[str] = []
    begin = end = 0
    for match in _go_matches(_regex(expression), string):
        if n > 0 and len(parts) == n - 1:
            break
        end, stop = match.span()
        if stop != 0:
            parts.append(string[begin:end])
            check_items(len(parts) + 1)  # counted as made: the last part is added after the loop
        begin = stop
    if end != len(string):
        parts.append(string[begin:])
    return parts


def _go_matches(program: _Regex, text: str) -> Iterator[Any]:
    """The matches Go's ``FindAll*``, ``Split`` and ``ReplaceAll*`` see: google-re2 searches on as Go does, but Go
    then skips an empty match right after the previous match (``x*`` on ``abxd``: four replacements in Python's
    ``sub``, three in Go's)."""
    previous_end = -1
    for found in program.finditer(text):
        start, stop = found.span()
        if not (start == stop == previous_end):
            yield found
        previous_end = stop


# ---- semantic versions (Masterminds/semver v3, as Helm) ---------------------------------------------------------

_SEMVER = re.compile(
    r"v?(?P<major>\d+)(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<meta>[0-9A-Za-z.-]+))?\Z"
)


class _Version:
    __slots__ = ("major", "meta", "minor", "patch", "pre", "text")

    def __init__(self, text: str) -> None:
        found = _SEMVER.match(text.strip())
        if found is None or any(str(found[p]) in "xX*" for p in ("minor", "patch") if found[p]):
            raise FilterError(f"semver: {text!r} is not a semantic version")
        self.text = text
        self.major, self.minor, self.patch = (int(found[p] or 0) for p in ("major", "minor", "patch"))
        self.pre: str = found["pre"] or ""
        self.meta: str = found["meta"] or ""

    def key(self) -> tuple[Any, ...]:
        if not self.pre:
            return (self.major, self.minor, self.patch, 1, ())
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre.split("."))
        return (self.major, self.minor, self.patch, 0, ids)


def semver(version: Any) -> dict[str, Any]:
    """``semver "1.2.3-alpha.1+123"``: ``Major``, ``Minor``, ``Patch``, ``Prerelease``, ``Metadata``, ``Original``."""
    parsed = _Version(_s(version))
    return {
        "Major": parsed.major,
        "Minor": parsed.minor,
        "Patch": parsed.patch,
        "Prerelease": parsed.pre,
        "Metadata": parsed.meta,
        "Original": parsed.text,
    }


_RANGE = r"(\S+)\s+-\s+(\S+)"
"""``1.2 - 1.4``; run by RE2 (``_regex``): with Python's re, one long word took time quadratic in its length."""
_CONSTRAINT = re.compile(r"\s*(!=|>=|=>|<=|=<|>|<|=|~>|~|\^)?\s*(v?[0-9xX*][0-9A-Za-z.+*-]*)\s*,?")


def semver_compare(constraint: Any, version: Any) -> bool:
    """Masterminds/semver's ``Constraint.Check``: ``||`` alternatives of comma- or space-separated conditions,
    operators ``= != > >= < <= ~ ^``, wildcards ``1.2.x``, ranges ``1.2 - 1.4``. A version with a prerelease
    (``1.30.1-eks-1``) only satisfies a condition that has one too (``>=1.19-0``)."""
    subject = _Version(_s(version))
    groups = _s(constraint).split("||")
    for group in groups:
        group = _regex(_RANGE).sub(lambda m: f">= {m.group(1)}, <= {m.group(2)}", group.strip())
        conditions = _conditions(group, constraint)
        if all(_check(op, target, subject) for op, target in conditions):
            return True
    return False


def _conditions(group: str, constraint: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(group):
        match = _CONSTRAINT.match(group, position)
        if match is None or match.end() == position:
            raise FilterError(f"semverCompare: cannot parse constraint {constraint!r}")
        found.append((match.group(1) or "=", match.group(2)))
        position = match.end()
    if not found:
        raise FilterError(f"semverCompare: empty constraint {constraint!r}")
    return found


def _check(op: str, target: str, subject: _Version) -> bool:
    parts = re.match(r"v?([^-+]*)(.*)", target)
    assert parts is not None
    numbers = parts.group(1).split(".")
    wild = next((i for i, n in enumerate(numbers) if n in ("x", "X", "*")), len(numbers))
    given = min(len(numbers), wild)
    bound = _Version(".".join(numbers[:given] or ["0"]) + (parts.group(2) if given == len(numbers) else ""))
    if subject.pre and not bound.pre:
        return False
    low = bound.key()
    # The version just past everything the given numbers cover: 1.2 covers 1.2.*, so next is 1.3.0-0.
    if given == 0:
        high = None
    else:
        head = [bound.major, bound.minor, bound.patch][:given]
        head[-1] += 1
        high = _Version(".".join(str(n) for n in head) + "-0").key()
    partial = given < 3 and not bound.pre
    key = subject.key()
    if op == "=":
        if given == 0:
            return True
        return low <= key < high if partial and high is not None else key == low
    if op == "!=":
        return not _check("=", target, subject)
    if op == ">":
        return key >= high if partial and high is not None else key > low
    if op in (">=", "=>"):
        return key >= low
    if op == "<":
        return key < low
    if op in ("<=", "=<"):
        return key < high if partial and high is not None else key <= low
    if op in ("~", "~>"):
        upper = [bound.major, bound.minor + 1, 0] if given >= 2 else [bound.major + 1, 0, 0]
        return low <= key < _Version(".".join(map(str, upper)) + "-0").key()
    # ^: the leftmost non-zero number stays.
    if bound.major > 0 or given == 1:
        upper = [bound.major + 1, 0, 0]
    elif bound.minor > 0 or given == 2:
        upper = [0, bound.minor + 1, 0]
    else:
        upper = [0, 0, bound.patch + 1]
    return low <= key < _Version(".".join(map(str, upper)) + "-0").key()


# ---- lists -----------------------------------------------------------------------------------------------------


def _list(value: Any, name: str) -> list[Any]:
    value = defined(value)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raise FilterError(f"{name}: expected a list, got {_go_type(value)}")


def list_(*values: Any) -> list[Any]:
    return check_size(list(values))  # type: ignore[no-any-return]


def append(items: Any, value: Any) -> list[Any]:
    return check_size([*_list(items, "append"), value])  # type: ignore[no-any-return]


def prepend(items: Any, value: Any) -> list[Any]:
    return check_size([value, *_list(items, "prepend")])  # type: ignore[no-any-return]


def concat(*lists: Any) -> list[Any]:
    out: list[Any] = []
    for items in lists:
        out.extend(_list(items, "concat"))
        check_items(len(out))  # its size as text is checked once, on the result (measuring it each time was quadratic)
    return out


def first(items: Any) -> Any:
    values = _list(items, "first")
    return values[0] if values else None


def last(items: Any) -> Any:
    values = _list(items, "last")
    return values[-1] if values else None


def rest(items: Any) -> list[Any]:
    return _list(items, "rest")[1:]


def initial(items: Any) -> list[Any]:
    return _list(items, "initial")[:-1]


def _identity(value: Any) -> Any:
    """A hashable stand-in for ``value`` equal for equal values, so ``uniq`` and ``without`` run in linear time: a
    comparison of every item with every other one took minutes for 300,000 items, inside one call that the
    render's time limit cannot see."""
    try:
        hash(value)
    except TypeError:
        return (1, json.dumps(value, sort_keys=True, default=str))
    return (0, value)


def uniq(items: Any) -> list[Any]:
    out: list[Any] = []
    seen: set[Any] = set()
    for value in _list(items, "uniq"):
        identity = _identity(value)
        if identity not in seen:
            seen.add(identity)
            out.append(value)
    return out


def without(items: Any, *values: Any) -> list[Any]:
    dropped = {_identity(v) for v in values}
    return [v for v in _list(items, "without") if _identity(v) not in dropped]


def has(value: Any, items: Any) -> bool:
    return value in _list(items, "has")


def compact(items: Any) -> list[Any]:
    return [v for v in _list(items, "compact") if not empty(v)]


def reverse(items: Any) -> list[Any]:
    return _list(items, "reverse")[::-1]


def sort_alpha(items: Any) -> list[str]:
    return sorted(go_value(v) for v in _list(items, "sortAlpha"))


def go_slice(items: Any, *indices: Any) -> Any:
    """Go's ``slice``: ``slice $list 1 3`` is items 1 and 2 (strings too)."""
    value = defined(items)
    bounds = [to_int(i) for i in indices[:2]]
    return value[slice(*bounds)] if len(bounds) == 2 else value[bounds[0] :] if bounds else value


def until(count: Any) -> list[int]:
    n = to_int(count)
    check_items(abs(n))
    return list(range(n)) if n >= 0 else list(range(0, n, -1))


# ---- dicts -----------------------------------------------------------------------------------------------------


def _dict(value: Any, name: str) -> Mapping[str, Any]:
    value = defined(value)
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise FilterError(f"{name}: expected a dict, got {_go_type(value)}")


def dict_(*pairs: Any, **named: Any) -> dict[str, Any]:
    """``dict "a" 1 "b" 2``; a key without a value maps to ``""``, as in Sprig. Jinja's ``dict(a=1)`` works too."""
    out = {go_value(pairs[i]): (pairs[i + 1] if i + 1 < len(pairs) else "") for i in range(0, len(pairs), 2)}
    out.update(named)
    return out


def set_(mapping: Any, key: Any, value: Any) -> dict[str, Any]:
    return {**_dict(mapping, "set"), go_value(key): value}


def unset(mapping: Any, key: Any) -> dict[str, Any]:
    return {k: v for k, v in _dict(mapping, "unset").items() if k != go_value(key)}


def get(mapping: Any, key: Any) -> Any:
    return _dict(mapping, "get").get(go_value(key), "")


def has_key(mapping: Any, key: Any) -> bool:
    return go_value(key) in _dict(mapping, "hasKey")


def pick(mapping: Any, *keys: Any) -> dict[str, Any]:
    wanted = {go_value(k) for k in keys}
    return {k: v for k, v in _dict(mapping, "pick").items() if k in wanted}


def omit(mapping: Any, *keys: Any) -> dict[str, Any]:
    unwanted = {go_value(k) for k in keys}
    return {k: v for k, v in _dict(mapping, "omit").items() if k not in unwanted}


def keys(*mappings: Any) -> list[str]:
    """Every key of the dicts, sorted (Go's map order is random; sorted is the one deterministic choice)."""
    return sorted(k for m in mappings for k in _dict(m, "keys"))


def _merge(dest: Mapping[str, Any], source: Mapping[str, Any], overwrite: bool) -> dict[str, Any]:
    out = dict(dest)
    for key, value in source.items():
        mine = out.get(key)
        if isinstance(mine, Mapping) and isinstance(value, Mapping):
            out[key] = _merge(mine, value, overwrite)
        elif overwrite or key not in out or mine is None:
            out[key] = value
    return out


def merge(dest: Any, *sources: Any) -> dict[str, Any]:
    """Deep merge giving precedence to ``dest`` (then to earlier sources); a new dict, ``dest`` is unchanged."""
    out = dict(_dict(dest, "merge"))
    for source in sources:
        out = _merge(out, _dict(source, "merge"), overwrite=False)
    return out


def merge_overwrite(dest: Any, *sources: Any) -> dict[str, Any]:
    """Deep merge giving precedence from right to left; a new dict, ``dest`` is unchanged."""
    out = dict(_dict(dest, "mergeOverwrite"))
    for source in sources:
        out = _merge(out, _dict(source, "mergeOverwrite"), overwrite=True)
    return out


def deep_copy(value: Any) -> Any:
    return copy.deepcopy(defined(value))


def dig(*args: Any) -> Any:
    """``dig "a" "b" default $dict``: the nested value at the keys, or ``default`` when a key is missing."""
    if len(args) < 3:
        raise FilterError("dig: expected keys, a default and a dict")
    *path, fallback, mapping = args
    node: Any = _dict(mapping, "dig")
    for key in path:
        if not isinstance(node, Mapping) or go_value(key) not in node:
            return fallback
        node = node[go_value(key)]
    return node


def go_index(item: Any, *indices: Any) -> Any:
    """Go's ``index``: ``index $map "a" "b"`` or ``index $list 0``; a missing map key is null."""
    node = defined(item)
    for index in indices:
        if isinstance(node, Mapping):
            node = node.get(go_value(index))
        elif isinstance(node, list | tuple | str):
            position = to_int(index)
            if not 0 <= position < len(node):
                raise FilterError(f"index: index {position} out of range (length {len(node)})")
            node = node[position]
        else:
            raise FilterError(f"index: cannot index {_go_type(node)}")
    return node


def go_len(value: Any) -> int:
    value = defined(value)
    if not isinstance(value, str | list | tuple | Mapping):
        raise FilterError(f"len: a {_go_type(value)} has no length")
    return len(value)


# ---- comparisons (Go's builtins; Jinja's own ==, <, and, or, not work as well) ------------------------------------


def eq(first_: Any, *others: Any) -> bool:
    """Go's ``eq``: true when the first argument equals any of the others."""
    return any(defined(first_) == defined(o) for o in others)


def ne(a: Any, b: Any) -> bool:
    return bool(defined(a) != defined(b))


def lt(a: Any, b: Any) -> bool:
    return bool(defined(a) < defined(b))


def le(a: Any, b: Any) -> bool:
    return bool(defined(a) <= defined(b))


def gt(a: Any, b: Any) -> bool:
    return bool(defined(a) > defined(b))


def ge(a: Any, b: Any) -> bool:
    return bool(defined(a) >= defined(b))


def deep_equal(a: Any, b: Any) -> bool:
    return bool(defined(a) == defined(b))


def kind_of(value: Any) -> str:
    return _go_kind(defined(value))


def kind_is(kind: Any, value: Any) -> bool:
    return _go_kind(defined(value)) == str(kind)


def type_of(value: Any) -> str:
    return _go_type(defined(value))


def type_is(type_name: Any, value: Any) -> bool:
    return _go_type(defined(value)) == str(type_name)


# ---- math (integers as Go's int64: division truncates toward zero) -----------------------------------------------


def add(*values: Any) -> int:
    return sum(to_int(v) for v in values)


def add1(value: Any) -> int:
    return to_int(value) + 1


def sub(a: Any, b: Any) -> int:
    return to_int(a) - to_int(b)


def mul(*values: Any) -> int:
    product = 1
    for value in values:
        product *= to_int(value)
        check_width(abs(product).bit_length() // 8)
    return product


def _int_parts(a: Any, b: Any, name: str) -> tuple[int, int]:
    x, y = to_int(a), to_int(b)
    if y == 0:
        raise FilterError(f"{name}: integer divide by zero")
    return x, y


def div(a: Any, b: Any) -> int:
    x, y = _int_parts(a, b, "div")
    quotient = abs(x) // abs(y)
    return quotient if (x >= 0) == (y >= 0) else -quotient


def mod(a: Any, b: Any) -> int:
    x, y = _int_parts(a, b, "mod")
    return x - div(x, y) * y


def max_(first_: Any, *others: Any) -> int:
    return max(to_int(v) for v in (first_, *others))


def min_(first_: Any, *others: Any) -> int:
    return min(to_int(v) for v in (first_, *others))


def floor(value: Any) -> float | int:
    return _number(float(math.floor(float(to_float(value)))))


def mulf(*values: Any) -> float | int:
    product = 1.0
    for value in values:
        product *= float(to_float(value))
    return _number(product)


def divf(first_: Any, *others: Any) -> float | int:
    quotient = float(to_float(first_))
    for value in others:
        divisor = float(to_float(value))
        if divisor == 0:
            raise FilterError("divf: division by zero")
        quotient /= divisor
    return _number(quotient)


# ---- encodings -----------------------------------------------------------------------------------------------


def _html_escaped(text: str) -> str:
    """Go's ``json.Marshal`` escapes ``<``, ``>`` and ``&``; Sprig's ``toPrettyJson`` keeps that."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def to_pretty_json(value: Any) -> str:
    text = json.dumps(plain(value), sort_keys=True, indent=2, ensure_ascii=False)
    return _html_escaped(text)


def to_raw_json(value: Any) -> str:
    """``toJson`` without Go's HTML escaping."""
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _from_json(text: Any, name: str, shape: type) -> Any:
    try:
        value = json.loads(_s(text))
    except ValueError as exc:
        raise FilterError(f"{name}: {exc}") from None
    if not isinstance(value, shape):
        raise FilterError(f"{name}: expected a JSON {'object' if shape is dict else 'array'}")
    return value


def from_json(text: Any) -> Any:
    return _from_json(text, "fromJson", dict)


def from_json_array(text: Any) -> Any:
    return _from_json(text, "fromJsonArray", list)


def from_yaml_array(text: Any) -> Any:
    try:
        value = load_values(_s(text))
    except YamlError as exc:
        raise FilterError(f"fromYamlArray: line {exc.line}: {exc.problem}") from None
    if not isinstance(value, list):
        raise FilterError("fromYamlArray: expected a YAML list")
    return value


def build_custom_cert(cert: Any, key: Any) -> dict[str, str]:
    """Sprig's ``buildCustomCert``: base64 PEM certificate and key in, ``{Cert, Key}`` out, as ``genCA`` returns."""
    out = {}
    for field, value, marker in (("Cert", cert, "CERTIFICATE"), ("Key", key, "PRIVATE KEY")):
        try:
            pem = base64.b64decode(_s(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise FilterError(f"buildCustomCert: {field.lower()} is not base64") from None
        if marker not in pem.partition("\n")[0]:
            raise FilterError(f"buildCustomCert: {field.lower()} is not a PEM {marker.lower()}")
        out[field] = pem
    return out


# ---- refused: anything that is not a function of the commit ------------------------------------------------------

_CLOCK = "it reads the clock; put the date or time in values"
_RANDOM = "it returns a new random value on every render; generate the value once and keep it in values or a Secret"
_CERTS = "it makes a new random key on every render; issue certificates with cert-manager or keep them in a Secret"
REFUSED: Mapping[str, str] = {
    **dict.fromkeys(
        ("now", "date", "dateInZone", "date_in_zone", "htmlDate", "htmlDateInZone", "ago", "unixEpoch"), _CLOCK
    ),
    **dict.fromkeys(
        ("dateModify", "date_modify", "mustDateModify", "must_date_modify", "toDate", "mustToDate", "duration"), _CLOCK
    ),
    **dict.fromkeys(("randAlphaNum", "randAlpha", "randNumeric", "randAscii", "randBytes", "randInt"), _RANDOM),
    **dict.fromkeys(("uuidv4", "shuffle", "bcrypt", "htpasswd", "encryptAES"), _RANDOM),
    **dict.fromkeys(
        (
            "genCA",
            "genCAWithKey",
            "genPrivateKey",
            "genSelfSignedCert",
            "genSelfSignedCertWithKey",
            "genSignedCert",
            "genSignedCertWithKey",
        ),
        _CERTS,
    ),
    "expandenv": "it reads the agent's environment variables; put the value in values",
    "getHostByName": "it asks DNS; put the address in values",
}
"""Sprig functions a template may not call, and why: renders must be deterministic (same commit, same manifests)."""


def _refusal(name: str, why: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise SecurityError(
            f"{name} is not available: renders must be deterministic (same commit, same manifests), and {why}"
        )

    return refuse


# ---- registration -------------------------------------------------------------------------------------------

FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "printf": printf,
    "print": go_print,
    "println": go_println,
    "toString": go_value,
    "toStrings": lambda items: [go_value(v) for v in _list(items, "toStrings")],
    "empty": empty,
    "coalesce": coalesce,
    "all": all_,
    "any": any_,
    "ternary": ternary,
    "fail": fail,
    "int": to_int,
    "int64": to_int,
    "float64": to_float,
    "atoi": atoi,
    "contains": contains,
    "hasPrefix": has_prefix,
    "hasSuffix": has_suffix,
    "trim": lambda text: _s(text).strip(),
    "trimAll": trim_all,
    "lower": lambda text: _s(text).lower(),
    "upper": lambda text: _s(text).upper(),
    "substr": substr,
    "splitList": split_list,
    "split": split,
    "splitn": splitn,
    "cat": cat,
    "untitle": untitle,
    "camelcase": camelcase,
    "kebabcase": kebabcase,
    "sha1sum": sha1sum,
    "base": base,
    "urlquery": urlquery,
    "urlParse": url_parse,
    "regexMatch": regex_match,
    "mustRegexMatch": regex_match,
    "regexFind": regex_find,
    "mustRegexFind": regex_find,
    "regexFindAll": regex_find_all,
    "mustRegexFindAll": regex_find_all,
    "regexReplaceAll": regex_replace_all,
    "mustRegexReplaceAll": regex_replace_all,
    "regexReplaceAllLiteral": regex_replace_all_literal,
    "mustRegexReplaceAllLiteral": regex_replace_all_literal,
    "regexSplit": regex_split,
    "mustRegexSplit": regex_split,
    "semver": semver,
    "semverCompare": semver_compare,
    "list": list_,
    "tuple": list_,
    "append": append,
    "mustAppend": append,
    "prepend": prepend,
    "mustPrepend": prepend,
    "concat": concat,
    "first": first,
    "mustFirst": first,
    "last": last,
    "mustLast": last,
    "rest": rest,
    "mustRest": rest,
    "initial": initial,
    "mustInitial": initial,
    "uniq": uniq,
    "mustUniq": uniq,
    "without": without,
    "mustWithout": without,
    "has": has,
    "mustHas": has,
    "compact": compact,
    "mustCompact": compact,
    "reverse": reverse,
    "mustReverse": reverse,
    "sortAlpha": sort_alpha,
    "slice": go_slice,
    "until": until,
    "dict": dict_,
    "set": set_,
    "unset": unset,
    "get": get,
    "hasKey": has_key,
    "pick": pick,
    "omit": omit,
    "keys": keys,
    "merge": merge,
    "mustMerge": merge,
    "mergeOverwrite": merge_overwrite,
    "mustMergeOverwrite": merge_overwrite,
    "deepCopy": deep_copy,
    "mustDeepCopy": deep_copy,
    "dig": dig,
    "index": go_index,
    "len": go_len,
    "eq": eq,
    "ne": ne,
    "lt": lt,
    "le": le,
    "gt": gt,
    "ge": ge,
    "deepEqual": deep_equal,
    "kindOf": kind_of,
    "kindIs": kind_is,
    "typeOf": type_of,
    "typeIs": type_is,
    "add": add,
    "add1": add1,
    "sub": sub,
    "mul": mul,
    "div": div,
    "mod": mod,
    "max": max_,
    "min": min_,
    "floor": floor,
    "mulf": mulf,
    "divf": divf,
    "mustToJson": FILTERS["toJson"],
    "toPrettyJson": to_pretty_json,
    "mustToPrettyJson": to_pretty_json,
    "toRawJson": to_raw_json,
    "mustToRawJson": to_raw_json,
    "fromJson": from_json,
    "mustFromJson": from_json,
    "fromJsonArray": from_json_array,
    "fromYamlArray": from_yaml_array,
    "buildCustomCert": build_custom_cert,
}
"""Helm's arguments in Helm's order; each is a template global."""

_JINJA_FILTERS_KEPT = frozenset({"list", "first", "last", "min", "max", "reverse", "slice", "lower", "upper", "trim"})
"""Jinja's own filters of these names stay (``x | list``, ``items | max``): the same result for a piped value, or a
Jinja idiom a Helm pipeline does not use. Helm's versions are the functions of the same name."""

_NOT_PIPED = frozenset({"dict", "list", "tuple", "until", "printf", "print", "println", "fail", "cat"})


def _piped_last(function: Callable[..., Any]) -> Callable[..., Any]:
    def as_filter(piped: Any, *args: Any) -> Any:
        return function(*args, piped)

    return as_filter


def _subject_first(function: Callable[..., Any]) -> Callable[..., Any]:
    def as_function(*args: Any) -> Any:
        if not args:
            raise FilterError("expected at least one argument")
        return function(args[-1], *args[:-1])

    return as_function


def register(globals_: dict[str, Any], filters: dict[str, Any]) -> None:
    """Add the vocabulary to an environment's globals and filters (once per environment, at creation)."""
    for name, function in FUNCTIONS.items():
        globals_[name] = function
        if name not in _JINJA_FILTERS_KEPT and name not in _NOT_PIPED:
            filters[name] = _piped_last(function)
    for name, filter_ in FILTERS.items():
        globals_.setdefault(name, _subject_first(filter_))
    for name, why in REFUSED.items():
        globals_[name] = filters[name] = _refusal(name, why)
