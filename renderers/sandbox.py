"""The Jinja environment charts render in: immutable sandbox, strict undefined values, bounded output.

Contract: a template reads only what the renderer passes it and the files of its own chart (``templates/``) and
of the repository's shared ``lib/`` folder. No environment variables, clock, randomness, network or other files
are reachable. Values cannot be modified. Sizes are bounded (``renderers.limits``): a string or container built by
an operator, filter, call or literal, or printed, may not exceed ``MAX_VALUE_CHARS`` as written out, so a template
cannot exhaust the agent's memory. CPU time is bounded too: every loop iteration and call is charged to the
render's ``time_limit``, so nested loops fail with ``render took longer than N s`` instead of stalling a worker
(the only thing here that depends on the machine: how fast a render runs decides only whether it fails).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from types import CodeType, GeneratorType
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from renderers.errors import UnreadableText, read_utf8
from renderers.filters import FILTERS, FilterError
from renderers.limits import (
    MAX_OUTPUT_CHARS,
    OutputTooLarge,
    bounded_join,
    check_format,
    check_items,
    check_size,
    check_str_method,
    check_width,
)
from renderers.sprig import register
from renderers.syntax import check_comments
from renderers.watchdog import watching

LIB_PREFIX = "lib/"
"""Template names starting with this prefix resolve in the repository's shared ``lib/`` folder."""

_MAX_POW_BITS = 1 << 16
_ROOTS: ContextVar[Mapping[str, Any]] = ContextVar("gitsync_render_roots")


class _Undefined(jinja2.ChainableUndefined, jinja2.StrictUndefined):
    """Strict: printing, testing or iterating a missing value fails, naming its full path (``values.image.tag``).

    Chainable: ``values.a.b | default("x")`` works when ``a`` is missing, as Helm users expect.
    """

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        return f"undefined value {_path_of(self._undefined_obj, self._undefined_name)}"


def _path_of(container: Any, name: Any) -> str:
    leaf = f"[{name!r}]" if not isinstance(name, str) else f".{name}"
    if container is jinja2.utils.missing:
        return str(name)
    roots = _ROOTS.get({})
    for root, value in roots.items():
        found = _find(value, container, root, depth=0)
        if found is not None:
            return found + leaf
    return f"({type(container).__name__}){leaf}"


def _find(node: Any, target: Any, path: str, depth: int) -> str | None:
    if node is target:
        return path
    if depth > 32:
        return None
    if isinstance(node, Mapping):
        items: Iterator[tuple[str, Any]] = ((f"{path}.{k}", v) for k, v in node.items())
    elif isinstance(node, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for sub_path, child in items:
        found = _find(child, target, sub_path, depth + 1)
        if found is not None:
            return found
    return None


class RenderTooSlow(FilterError):
    """The render used up its CPU time (a ``FilterError`` so that it is reported as its message, at the line)."""


class _Budget:
    """What is left to one render: CPU time, charged by loop iterations and calls and checked every 256 charges,
    and output characters, charged as each chunk is produced."""

    __slots__ = ("charges", "deadline", "output_left", "stalled")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.thread_time() + seconds
        self.charges = 0
        self.output_left = MAX_OUTPUT_CHARS
        message = f"render took longer than {seconds:g} s"
        # raised by the charges and by the watchdog, which needs a class it can construct without arguments
        self.stalled: type[RenderTooSlow] = type(
            "RenderTooSlow", (RenderTooSlow,), {"__init__": lambda exc: RenderTooSlow.__init__(exc, message)}
        )


_BUDGET: ContextVar[_Budget | None] = ContextVar("gitsync_render_budget", default=None)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Templates rendered in this block (in this thread) fail with ``RenderTooSlow`` once they have used
    ``seconds`` of this thread's CPU time, and with ``OutputTooLarge`` once they have produced more than
    ``MAX_OUTPUT_CHARS`` together."""
    token = _BUDGET.set(_Budget(seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


@contextmanager
def watched() -> Iterator[None]:
    """Inside, the render's time limit holds even during one long call (``renderers.watchdog``): wrap a template's
    rendering in it where every exception becomes the template's render error."""
    budget = _BUDGET.get()
    if budget is None:
        yield
        return
    with watching(budget.deadline, budget.stalled):
        yield


def _charge() -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.charges += 1
    if not budget.charges & 0xFF and time.thread_time() > budget.deadline:
        raise budget.stalled()


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles what the stock sandbox cannot intercept: ``a ~ b`` to a size-checked join, list, tuple and dict
    literals to size-checked values, and ``for`` loops to charged iterations."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja forbids custom node types: the iterable becomes a call of environment.paced (charged each item).
        paced = nodes.EnvironmentAttribute("paced", lineno=node.iter.lineno)
        node.iter = nodes.Call(paced, [node.iter], [], None, None, lineno=node.iter.lineno)
        super().visit_For(node, frame)

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target: {% set a, b = ... %}
            super().visit_Tuple(node, frame)
            return
        self.write("environment.checked(")
        super().visit_Tuple(node, frame)
        self.write(")")


class ChartEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with size limits on ``*``, ``**``, ``+``, ``%``, ``~`` and width arguments of calls."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``values.items`` is the key ``items`` when there is one, not the dict method (Jinja's default order)."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, Sized) and isinstance(count, int):
                    check_width(len(seq) * count)
        elif op == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right * max(abs(left), 2).bit_length() > _MAX_POW_BITS
            ):
                raise OutputTooLarge(f"{left} ** {right} is too large")
        elif op == "%" and isinstance(left, str):
            check_format(left, right, each_once=not isinstance(right, Mapping))
        return check_size(super().call_binop(context, op, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _charge()
        check_width(*args, *kwargs.values())
        # the sandbox hands out str.format and format_map wrapped (its safe formatter): the method is __wrapped__
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "join" and args and not isinstance(args[0], list | tuple | str):
                args = (tuple(args[0]), *args[1:])  # measured before joining: a generator cannot be
            check_str_method(owner, name, args, kwargs)
        return check_size(super().call(__context, __obj, *args, **kwargs))

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        return bounded_join(parts)

    def checked(self, value: Any) -> Any:
        return check_size(value)

    def preprocess(self, source: str, name: str | None = None, filename: str | None = None) -> str:
        """Refuse comments that would swallow content (``renderers.syntax``); runs once per compile."""
        check_comments(self.lexer.tokeniter(source, name, filename), name, filename)
        return super().preprocess(source, name, filename)

    def paced(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            _charge()
            yield item


class TemplateUnreadable(jinja2.TemplateSyntaxError):
    """A template (or helper) file that is not UTF-8 text, or too large. Raised through Jinja as a syntax error,
    which is what carries the file that holds it (an include's, not the includer's) and its line; reported without
    "template syntax"."""


class ChartLoader(jinja2.BaseLoader):
    """Loads ``name`` from the chart's ``templates/`` folder, or ``lib/name`` from the repository's ``lib/``.

    Names are relative POSIX paths without ``..``; the resolved file must stay inside its folder, so neither
    ``{% include "../../secrets" %}`` nor a symlink reaches anything else.
    """

    def __init__(self, templates: Path, lib: Path) -> None:
        self.templates = templates
        self.lib = lib

    def resolve(self, name: str) -> Path:
        root, rest = (self.lib, name[len(LIB_PREFIX) :]) if name.startswith(LIB_PREFIX) else (self.templates, name)
        parts = rest.split("/")
        if not rest or "\\" in rest or rest.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise jinja2.TemplateNotFound(f"{name} (template names are paths inside the chart, without '..')")
        path = root.joinpath(*parts)
        try:
            real = path.resolve(strict=True)
            base = root.resolve(strict=True)
        except (OSError, RuntimeError):
            raise jinja2.TemplateNotFound(name) from None
        if not real.is_relative_to(base) or not real.is_file():
            raise jinja2.TemplateNotFound(f"{name} (outside the chart)")
        return path

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        path = self.resolve(template)
        try:
            mtime = path.stat().st_mtime_ns
            source = read_utf8(path)
        except UnreadableText as exc:
            raise TemplateUnreadable(exc.problem, exc.line or 1, template, str(path)) from None
        except OSError as exc:
            raise jinja2.TemplateNotFound(f"{template} ({exc})") from None

        def uptodate() -> bool:
            try:
                return path.stat().st_mtime_ns == mtime
            except OSError:
                return False

        return source, str(path), uptodate


def _lookup(*_args: Any, **_kwargs: Any) -> Any:
    raise SecurityError(
        "lookup is not available: renders must be deterministic (same commit, same manifests), "
        "so templates cannot read the cluster; put the value in values instead"
    )


def _finalize(value: Any) -> Any:
    """``{{ x }}`` prints booleans as YAML reads them and ``None`` as nothing (not Python's ``True``/``None``);
    strings and containers within the size limit."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return check_size(value)  # a container prints as its repr: refuse a hostile one before it is built


# Builtins that would make a render depend on something other than its inputs.
_NONDETERMINISTIC_FILTERS = ("random", "shuffle")
_NONDETERMINISTIC_GLOBALS = ("lipsum", "cycler", "joiner")


@lru_cache(maxsize=32)
def chart_environment(templates: Path, lib: Path) -> ChartEnvironment:
    """One environment per chart folder: compiled templates are cached by Jinja and reused across renders."""
    env = ChartEnvironment(
        loader=ChartLoader(templates, lib),
        undefined=_Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_finalize,
        auto_reload=True,
    )
    for name in _NONDETERMINISTIC_FILTERS:
        env.filters.pop(name, None)
    for name in _NONDETERMINISTIC_GLOBALS:
        env.globals.pop(name, None)
    env.filters.update(FILTERS)
    register(env.globals, env.filters)
    env.filters = {name: _counted_filter(function) for name, function in env.filters.items()}
    env.globals["lookup"] = _lookup
    return env


def _counted_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` whose result, when it is made item by item (``map``, ``select``, ``batch``, ``unique``,
    ``items`` are generators), is counted and charged as it is consumed, so ``s | batch(1) | list`` stops at
    ``MAX_ITEMS`` instead of filling memory; a list or mapping it returns whole is checked by its length. (The
    compiled template calls a filter directly, not through ``call``.)"""

    @functools.wraps(function)  # keeps jinja_pass_arg: pass_environment and pass_context still apply
    def counted(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if isinstance(result, Iterator):
            return _counted(result)
        if isinstance(result, list | tuple | Mapping):
            check_items(len(result))
        return result

    return counted


def _counted(items: Iterator[Any]) -> Iterator[Any]:
    for count, item in enumerate(items, 1):
        check_items(count)
        _charge()
        yield item


def bind_roots(roots: Mapping[str, Any]) -> Any:
    """Make ``roots`` the names undefined-value messages search for a path; returns a token for ``unbind_roots``."""
    return _ROOTS.set(roots)


def unbind_roots(token: Any) -> None:
    _ROOTS.reset(token)


class Stream:
    """Renders ``template`` chunk by chunk as ``(text, code, Python line)``.

    The code and line of the statement that yielded each chunk let the caller bound the output as it grows and
    report a problem in it (invalid YAML) at the template line a human edits (``get_corresponding_lineno``).
    ``line`` says where the template is while it is paused between two chunks: the watchdog's error can land
    there, outside every template frame, and is still reported at the template's line.
    """

    def __init__(self, template: jinja2.Template, variables: Mapping[str, Any]) -> None:
        self.template = template
        self._generator = cast(
            "GeneratorType[str, None, None]", template.root_render_func(template.new_context(dict(variables)))
        )
        self._last_line = 0

    def __iter__(self) -> Iterator[tuple[str, CodeType | None, int]]:
        generator = self._generator
        env = self.template.environment
        budget = _BUDGET.get()
        while True:
            try:
                chunk = next(generator)
            except StopIteration:
                return
            except Exception:  # noqa: BLE001 - re-raised with the traceback rewritten to template lines
                env.handle_exception()
            if budget is not None:
                budget.output_left -= len(chunk)
                if budget.output_left < 0:
                    raise OutputTooLarge(f"the app's rendered output exceeds {MAX_OUTPUT_CHARS} characters")
            frame = generator.gi_frame
            self._last_line = frame.f_lineno if frame is not None else 0
            yield chunk, (frame.f_code if frame is not None else None), self._last_line

    def line(self) -> int | None:
        """The template line that yielded the last chunk (where the paused template is), None before the first."""
        return self.template.get_corresponding_lineno(self._last_line) if self._last_line else None
