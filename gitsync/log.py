"""Structured logging: one event name plus key-value fields per line.

JSON lines when stderr is not a terminal (the agent in a cluster), coloured console output on a terminal.
A redaction processor drops the value of any field whose name looks like a credential, so a token passed
by mistake never reaches a log line.

structlog is imported only when a line is actually written: the import costs ~75 ms, a fifth of a no-op
``gitsync diff``, which logs nothing below ERROR. Loggers check the stdlib level first, and the stdlib handler
that ``configure`` installs builds its structlog formatter on the first record it formats.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, ParamSpec, TypeVar

_SECRET_WORDS = ("token", "secret", "password", "passwd", "authorization", "private_key", "credential")
REDACTED = "<redacted>"


def _redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = REDACTED
    return event


def _identity(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Route every log line, ours and stdlib's (kubernetes, urllib3, apscheduler), to one stderr handler.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal). ``level`` is the root level;
    a logger below it costs one level check and imports nothing.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(console=fmt == "console" or (fmt == "auto" and sys.stderr.isatty())))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "apscheduler", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Formatter(logging.Formatter):
    """structlog's ``ProcessorFormatter``, built on the first record: a run that logs nothing never imports it."""

    def __init__(self, *, console: bool) -> None:
        super().__init__()
        self._console = console
        self._formatter: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._formatter is None:  # the handler's lock is held: built once
            self._formatter = _processor_formatter(self._console)
        return self._formatter.format(record)


def _shared_processors() -> list[Any]:
    """What every line gets, whether it comes from our loggers or from a library's stdlib logger."""
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]


def _processor_formatter(console: bool) -> logging.Formatter:
    import structlog
    from structlog.tracebacks import ExceptionDictTransformer

    # Tracebacks without local variables: a frame's locals can hold a Git token, an auth header or a rendered
    # Secret, and structlog's default exception renderers print them.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False))
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    tracebacks = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _identity if console else tracebacks,
            renderer,
        ],
    )


@functools.cache
def _route_structlog() -> None:
    """Configure structlog to hand its events to the stdlib handler; once per process (the configuration does
    not depend on ``configure``'s arguments, so two threads racing here set the same thing)."""
    import structlog

    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class Logger:
    """A named logger; ``log.info("sync.applied", app=..., env=..., created=3)``.

    A call below the stdlib level of ``name`` returns after one cached level check; an enabled one goes through
    a structlog logger, so fields bound with ``structlog.contextvars`` (app, env, revision) are on the line.
    """

    __slots__ = ("_bound", "_name", "_stdlib")

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib = logging.getLogger(name)
        self._bound: Any = None

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error line with the exception being handled."""
        self._emit(logging.ERROR, "exception", event, fields)

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not self._stdlib.isEnabledFor(level):
            return
        if self._bound is None:
            import structlog

            _route_structlog()
            self._bound = structlog.get_logger(self._name)
        getattr(self._bound, method)(event, **fields)


def get(name: str = "gitsync") -> Logger:
    """The logger for ``name`` (``gitsync.<stage>``); cheap enough to call at import time."""
    return Logger(name)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_caller_context(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap ``fn`` for a thread pool so its log lines keep the caller's bound fields (app, env, revision):
    pool threads do not inherit contextvars. Each call runs in its own copy, so calls may run concurrently."""
    parent = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return parent.copy().run(fn, *args, **kwargs)

    return run
