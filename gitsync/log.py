"""Structured logging: one event name plus key-value fields per line.

JSON lines when stderr is not a terminal (the agent in a cluster), coloured console output on a terminal.
A redaction processor drops the value of any field whose name looks like a credential, so a token passed
by mistake never reaches a log line.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, ParamSpec, TypeVar

import structlog
from structlog.tracebacks import ExceptionDictTransformer

_SECRET_WORDS = ("token", "secret", "password", "passwd", "authorization", "private_key", "credential")
REDACTED = "<redacted>"


def _redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = REDACTED
    return event


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Set up structlog and route stdlib logging (kubernetes, urllib3, apscheduler) through it.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    # Tracebacks without local variables: a frame's locals can hold a Git token, an auth header or a rendered
    # Secret, and structlog's default exception renderers print them.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False))
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    tracebacks = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                tracebacks if not use_console else _identity,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "apscheduler", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _identity(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def get(name: str = "gitsync") -> Any:
    """A structlog logger; call ``log.info("sync.applied", app=..., env=..., created=3)``."""
    return structlog.get_logger(name)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_caller_context(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap ``fn`` for a thread pool so its log lines keep the caller's bound fields (app, env, revision):
    pool threads do not inherit contextvars. Each call runs in its own copy, so calls may run concurrently."""
    parent = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return parent.copy().run(fn, *args, **kwargs)

    return run
