"""Template text that Jinja would misread: caught before it swallows content, and explained so it can be fixed.

PrometheusRules, Grafana dashboards and shell scripts carry text that looks like Jinja (``{{ $labels.instance }}``,
``${#ARGS[@]}``). Jinja either fails on it, with a message that names a character offset, or, worse, reads
``{#`` as the start of a comment and silently drops everything up to the next ``#}``. ``check_comments`` refuses
the comments that can only be accidents; ``explain`` turns a syntax error into one line with the column and the
fix. Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import jinja2

VERBATIM_FIX = (
    "to keep such text as it is, wrap it in {% raw %}...{% endraw %}, move the file to the chart's files/ folder "
    'and include it with file("name"), or make the app a plain-manifests app (manifests/ instead of templates/)'
)
"""How to include text that must not be read as Jinja; every message about look-alike content ends with it."""

_OFFSET = re.compile(r"^(unexpected char .+) at (\d+)$")
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(?:[$.]|end\b|template\s|define\s|range\s+[$.]|if\s+[$.])")


def check_comments(tokens: Iterable[tuple[int, str, str]], name: str | None, filename: str | None) -> None:
    """Refuse a Jinja comment that swallows content, given the raw lexer tokens (``Lexer.tokeniter``).

    A comment is an accident when it starts right after ``$`` (shell's ``${#var}``), when it holds another
    ``{#`` (comments do not nest), or when it starts after other text on its line and runs past the line's end
    (``echo ${#A[@]}`` ... ``{# note #}``). A comment on its own lines, or within one line, is fine.
    """
    before = ""
    for line, kind, value in tokens:
        if kind == "comment":
            problem = None
            if before.endswith("$"):
                problem = '"${#" is shell syntax, but Jinja reads "{#" as the start of a comment'
            elif "{#" in value:
                problem = '"{#" inside a Jinja comment: comments do not nest, so text would be dropped'
            elif "\n" in value and before.strip():
                problem = '"{#" after other text starts a Jinja comment that runs past the line and drops the text'
            if problem:
                raise jinja2.TemplateSyntaxError(f"{problem}; {VERBATIM_FIX}", line, name, filename)
        if kind != "comment_begin":
            before = value.rpartition("\n")[2] if "\n" in value else before + value


def explain(exc: jinja2.TemplateSyntaxError) -> str:
    """The problem of a syntax error, with the column instead of Jinja's offset and the fix for look-alike text."""
    message = exc.message or "invalid template"
    source = exc.source or ""
    text = source.split("\n")[exc.lineno - 1] if 0 < exc.lineno <= source.count("\n") + 1 else ""
    offset = _OFFSET.match(message)
    if offset:
        position = int(offset.group(2))
        message = f"{offset.group(1)} at column {position - source.rfind(chr(10), 0, position)}"
    if _GO_TEMPLATE.search(text):
        return f"{message}: this line holds a Go template ({{{{ $... }}}} or {{{{ .Values... }}}}); {VERBATIM_FIX}"
    if message.startswith("Missing end of comment tag"):
        return f'{message}: "{{#" starts a Jinja comment; {VERBATIM_FIX}'
    return message
