"""A tiny, safe condition language for analysis results: ``result[0] < 0.05``, ``len(result) >= 3 and result[0] != 0``.

Contract: pure, no I/O, never ``eval``. Grammar (``or`` binds looser than ``and``; no parentheses needed in practice)::

    expr       := conj ("or" conj)*
    conj       := comparison ("and" comparison)*
    comparison := operand OP operand            OP: < <= > >= == !=
    operand    := NUMBER | STRING | true | false | result | result[INT] | len(result)

``result`` is the measured value: a list of numbers for a Prometheus vector (``result`` alone means
``result[0]``), or the JSON value an HTTP check extracted. A reference to data that is not there (an empty vector,
an index out of range, NaN) makes the whole condition *undecidable*, which the caller reports as inconclusive,
never as success.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gitsync.errors import TerminalError

__all__ = ["Condition", "ConditionError", "NoData", "parse"]


class ConditionError(TerminalError):
    """A condition that does not parse; raised when the policy is read, so it is reported with its field."""


class NoData(Exception):
    """The condition refers to data the measurement does not have: the outcome is inconclusive."""


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
      | (?P<string>"[^"]*"|'[^']*')
      | (?P<op><=|>=|==|!=|<|>)
      | (?P<len>len\(\s*result\s*\))
      | (?P<index>result\s*\[\s*(?P<i>\d+)\s*\])
      | (?P<word>[A-Za-z_]+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Operand:
    kind: str  # "const", "result", "len"
    value: Any = None

    def resolve(self, result: Any) -> Any:
        if self.kind == "const":
            return self.value
        if self.kind == "len":
            return len(result) if isinstance(result, Sequence) and not isinstance(result, str) else 1
        index = int(self.value)
        if isinstance(result, Sequence) and not isinstance(result, str):
            if index >= len(result):
                raise NoData(f"result[{index}] does not exist ({len(result)} values)")
            value = result[index]
        elif index == 0 and result is not None:
            value = result
        else:
            raise NoData(f"result[{index}] does not exist")
        if isinstance(value, float) and math.isnan(value):
            raise NoData(f"result[{index}] is NaN")
        return value


@dataclass(frozen=True, slots=True)
class _Comparison:
    left: _Operand
    op: str
    right: _Operand

    def holds(self, result: Any) -> bool:
        left, right = self.left.resolve(result), self.right.resolve(result)
        try:
            return _OPS[self.op](left, right)
        except TypeError:
            raise NoData(f"cannot compare {left!r} {self.op} {right!r}") from None


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition: a disjunction of conjunctions of comparisons. ``text`` is what the user wrote."""

    text: str
    clauses: tuple[tuple[_Comparison, ...], ...]

    def evaluate(self, result: Any) -> bool:
        """True or False; raises ``NoData`` when the result lacks what the condition refers to."""
        return any(all(comparison.holds(result) for comparison in clause) for clause in self.clauses)

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Condition:
    """Parse ``text``; ``ConditionError`` names the offending position."""
    tokens = _tokenize(text)
    clauses: list[tuple[_Comparison, ...]] = []
    current: list[_Comparison] = []
    pos = 0
    while True:
        if pos + 3 > len(tokens):
            raise ConditionError(f"condition {text!r}: expected 'operand OP operand' at the end")
        left, op, right = tokens[pos : pos + 3]
        if not isinstance(left, _Operand) or op not in _OPS or not isinstance(right, _Operand):
            raise ConditionError(f"condition {text!r}: expected 'operand OP operand', e.g. 'result[0] < 0.05'")
        current.append(_Comparison(left, str(op), right))
        pos += 3
        if pos == len(tokens):
            break
        joiner = tokens[pos]
        if joiner == "and":
            pos += 1
        elif joiner == "or":
            clauses.append(tuple(current))
            current = []
            pos += 1
        else:
            raise ConditionError(f"condition {text!r}: expected 'and' or 'or', got {joiner!r}")
    clauses.append(tuple(current))
    return Condition(text, tuple(clauses))


def _tokenize(text: str) -> list[_Operand | str]:
    out: list[_Operand | str] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ConditionError(f"condition {text!r}: unexpected text at {pos}: {stripped[pos : pos + 10]!r}")
        pos = match.end()
        if match["number"] is not None:
            out.append(_Operand("const", float(match["number"])))
        elif match["string"] is not None:
            out.append(_Operand("const", match["string"][1:-1]))
        elif match["op"] is not None:
            out.append(match["op"])
        elif match["len"] is not None:
            out.append(_Operand("len"))
        elif match["index"] is not None:
            out.append(_Operand("result", int(match["i"])))
        else:
            word = match["word"]
            if word == "result":
                out.append(_Operand("result", 0))
            elif word in ("true", "false"):
                out.append(_Operand("const", word == "true"))
            elif word in ("and", "or"):
                out.append(word)
            else:
                raise ConditionError(f"condition {text!r}: unknown word {word!r} (use result, result[N], len(result))")
    if not out:
        raise ConditionError("condition is empty")
    return out
