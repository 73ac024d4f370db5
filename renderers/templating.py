"""One app's templates rendered to text, with Helm's ``include``, ``tpl``, ``config_hash`` and ``file``/``files``.

A ``TemplateRun`` lives for one render of one app: it caches each template's output (so ``config_hash`` and
the main pass see the same text), caches helper modules, and turns every failure into a ``RenderError`` at the
innermost template line involved (the helper's line when a helper fails, the caller's otherwise).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from renderers.chart import Chart
from renderers.chartfiles import ChartFiles
from renderers.errors import RenderError
from renderers.filters import FilterError, RequiredValueMissing
from renderers.limits import MAX_OUTPUT_CHARS, OutputTooLarge
from renderers.sandbox import (
    RenderTooSlow,
    Stream,
    TemplateUnreadable,
    bind_roots,
    chart_environment,
    unbind_roots,
    watched,
)
from renderers.syntax import explain
from renderers.values import relative
from renderers.yamlio import YamlError, load_manifests

_CONFIG_KINDS = ("ConfigMap", "Secret")
_CONFIG_FIELDS = ("data", "binaryData", "stringData")


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    """A template's output and enough bookkeeping to map an output line back to a template line."""

    path: str
    """Repository-relative path of the template file."""
    text: str
    template: jinja2.Template
    offsets: tuple[int, ...]
    """Start offset in ``text`` of each chunk the template yielded."""
    code_lines: tuple[tuple[CodeType | None, int], ...]
    """For each chunk: the code and Python line that yielded it."""

    def template_line(
        self, output_line: int, line_starts: list[int] | None = None, debug_info: list[tuple[int, int]] | None = None
    ) -> int:
        """The template line that produced ``output_line`` (1-based) of ``text``.

        Literal template text keeps its line structure, so inside a literal chunk the line advances with each
        newline; an expression's output (``toYaml``, ``include``) maps to the expression's line. A caller mapping
        many lines passes ``line_starts`` and ``debug_info`` (``Template.debug_info`` parses a string per access).
        """
        if not self.offsets:
            return 1
        starts = line_starts if line_starts is not None else self.line_starts()
        position = starts[min(output_line, len(starts)) - 1]
        while position < len(self.text) and self.text[position] in " \t":
            position += 1
        index = max(bisect.bisect_right(self.offsets, position) - 1, 0)
        code, py_line = self.code_lines[index]
        line = _corresponding_line(debug_info if debug_info is not None else self.template.debug_info, py_line)
        end = self.offsets[index + 1] if index + 1 < len(self.offsets) else len(self.text)
        chunk = self.text[self.offsets[index] : end]
        if code is not None and chunk in code.co_consts:
            line += self.text.count("\n", self.offsets[index], position)
        return line

    def line_starts(self) -> list[int]:
        """Offset of the first character of each output line."""
        starts = [0]
        find = self.text.find
        position = find("\n")
        while position >= 0:
            starts.append(position + 1)
            position = find("\n", position + 1)
        return starts

    def documents(self) -> Iterator[tuple[int, Any]]:
        """Each YAML document as ``(template line, data)``; invalid YAML is a ``RenderError`` at its template line."""
        starts, debug_info = self.line_starts(), self.template.debug_info
        try:
            for output_line, data in load_manifests(self.text):
                yield self.template_line(output_line, starts, debug_info), data
        except YamlError as exc:
            raise RenderError(
                self.path,
                f"invalid YAML in rendered output (output line {exc.line}): {exc.problem}",
                self.template_line(exc.line, starts, debug_info),
            ) from None


class TemplateRun:
    """Renders the templates of one chart with one set of variables (``values``, ``release``, ``chart``, ``env``)."""

    def __init__(self, repo: Path, chart: Chart, variables: Mapping[str, Any]) -> None:
        self.repo = repo
        self.chart = chart
        self.lib = repo / "lib"
        self.env = chart_environment(chart.templates_dir, self.lib)
        self.roots = dict(variables)
        files = ChartFiles(chart.path / "files", relative(repo, chart.path / "files") + "/")
        self.variables = {
            **variables,
            "include": self.include,
            "tpl": self.tpl,
            "config_hash": self.config_hash,
            "file": files.get,
            "files": files.glob,
        }
        self._rendered: dict[str, RenderedTemplate] = {}
        self._active: list[str] = []
        self._helpers: dict[str, Any] = {}
        self._tpl: dict[str, jinja2.Template] = {}
        self._template_dirs = tuple(str(p) + os.sep for p in (chart.templates_dir, self.lib))

    def render(self, name: str) -> RenderedTemplate:
        """The output of template ``name``; every failure is a ``RenderError`` naming ``file:line``."""
        token = bind_roots(self.roots)
        try:
            with watched():
                return self._render(name)
        except RenderError:
            raise
        except Exception as exc:
            raise self._error(exc, name) from exc
        finally:
            unbind_roots(token)

    def _render(self, name: str) -> RenderedTemplate:
        cached = self._rendered.get(name)
        if cached is not None:
            return cached
        if name in self._active:
            raise FilterError(f"config_hash: {name} depends on its own output ({' -> '.join([*self._active, name])})")
        template = self.env.get_template(name)
        streaming = Stream(template, self.variables)
        self._active.append(name)
        try:
            chunks: list[str] = []
            offsets: list[int] = []
            code_lines: list[tuple[CodeType | None, int]] = []
            position = 0
            for chunk, code, py_line in streaming:
                offsets.append(position)
                code_lines.append((code, py_line))
                chunks.append(chunk)
                position += len(chunk)
                if position > MAX_OUTPUT_CHARS:
                    raise RenderError(
                        self._relative(template.filename or name),
                        f"rendered output exceeds {MAX_OUTPUT_CHARS} characters",
                        template.get_corresponding_lineno(py_line),
                    )
        except RenderTooSlow as exc:
            if self._innermost(exc.__traceback__, name)[1] is not None:
                raise
            # the watchdog's error landed between two chunks, outside every template frame
            raise RenderError(self._relative(template.filename or name), str(exc), streaming.line()) from None
        finally:
            self._active.pop()
        rendered = RenderedTemplate(
            path=self._relative(template.filename or name),
            text="".join(chunks),
            template=template,
            offsets=tuple(offsets),
            code_lines=tuple(code_lines),
        )
        self._rendered[name] = rendered
        return rendered

    def include(self, name: str, *args: Any, **kwargs: Any) -> str:
        """Helm's ``include``: call macro ``labels`` of ``_helpers.j2`` as ``include("helpers.labels")``.

        Extra arguments go to the macro. The output has its leading and trailing newlines removed, so
        ``include("helpers.labels") | nindent(4)`` places the block exactly.
        """
        prefix, _, macro_name = str(name).partition(".")
        template_name = self.chart.helpers.get(prefix)
        if template_name is None or not macro_name:
            known = ", ".join(f"{p}.<macro>" for p in sorted(self.chart.helpers)) or "none: add templates/_helpers.j2"
            raise FilterError(f"include: no helper {name!r} (helpers are named <file>.<macro>; known: {known})")
        module = self._helpers.get(template_name)
        if module is None:
            module = self.env.get_template(template_name).make_module(vars=self.variables)
            self._helpers[template_name] = module
        macro = getattr(module, macro_name, None)
        if not callable(macro):
            raise FilterError(f"include: {template_name} has no macro {macro_name!r}")
        return str(macro(*args, **kwargs)).strip("\n")

    def tpl(self, text: Any) -> str:
        """Helm's ``tpl``: render a string (usually from values) as a template with the same variables."""
        if isinstance(text, jinja2.Undefined):
            text._fail_with_undefined_error()
        source = str(text)
        template = self._tpl.get(source)
        if template is None:
            template = self._tpl[source] = self.env.from_string(source)
        return template.render(self.variables)

    def config_hash(self, *names: str) -> str:
        """SHA-256 of the data of every ConfigMap and Secret rendered by the named templates.

        Put it on a pod template (annotation ``gitsync.dev/config-hash``) so a config-only change rolls the
        workload; labels, annotations and formatting of the config objects do not change the hash.
        """
        if not names:
            raise FilterError('config_hash: name the templates holding the config, e.g. config_hash("configmap.yaml")')
        found: dict[str, Any] = {}
        for name in names:
            rendered = self._render(str(name))
            for _line, doc in rendered.documents():
                if isinstance(doc, dict) and doc.get("kind") in _CONFIG_KINDS:
                    meta = doc.get("metadata") or {}
                    key = f"{doc['kind']}/{meta.get('name', '') if isinstance(meta, dict) else ''}"
                    found[key] = {field: doc.get(field) for field in _CONFIG_FIELDS if field in doc}
        if not found:
            raise FilterError(f"config_hash: {', '.join(names)} renders no ConfigMap or Secret")
        canonical = json.dumps(found, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _relative(self, filename: str) -> str:
        return relative(self.repo, Path(filename))

    def _error(self, exc: BaseException, name: str) -> RenderError:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            path = (
                self._relative(exc.filename) if exc.filename else self._relative(str(self.chart.templates_dir / name))
            )
            if isinstance(exc, TemplateUnreadable):
                return RenderError(path, exc.message or "", exc.lineno)
            return RenderError(path, f"template syntax: {explain(exc)}", exc.lineno)
        path, line = self._innermost(exc.__traceback__, name)
        return RenderError(path, _problem(exc), line)

    def _innermost(self, tb: TracebackType | None, name: str) -> tuple[str, int | None]:
        where: tuple[str, int | None] = (self._relative(str(self.chart.templates_dir / name)), None)
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.startswith(self._template_dirs):
                where = (self._relative(filename), tb.tb_lineno)
            tb = tb.tb_next
        return where


def _corresponding_line(debug_info: list[tuple[int, int]], py_line: int) -> int:
    """``jinja2.Template.get_corresponding_lineno`` over debug info parsed once: (template line, code line) pairs."""
    for template_line, code_line in reversed(debug_info):
        if code_line <= py_line:
            return template_line
    return 1


def _problem(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return str(exc)
    if isinstance(exc, RequiredValueMissing):
        return f"required: {exc}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template not found: {exc.message}"
    if isinstance(exc, SecurityError | OutputTooLarge):
        return f"not allowed in templates: {exc}"
    if isinstance(exc, FilterError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "recursion too deep (does a helper or tpl call itself?)"
    return f"{type(exc).__name__}: {exc}"
