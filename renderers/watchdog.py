"""Stops a template that runs past its render's CPU time inside one call, where the template's charges never look.

The time limit of a render is cooperative (``renderers.sandbox``): the template's loop iterations and calls are
charged, and the thread's CPU time is checked every 256 charges. A function or filter that runs long in Python
code of its own (a quadratic algorithm over 200,000 items, textwrap on a long word) is never interrupted by that,
and the worker it runs on stays busy for as long as it takes. This module keeps one daemon thread that reads the
CPU time of each thread rendering a template and, once it passes the render's deadline, raises the render's
error in that thread (``PyThreadState_SetAsyncExc``, delivered between two Python bytecodes; a call running in C
finishes first, and such calls are bounded by the size limits instead).

What must hold, since the exception is raised wherever the thread happens to be:
- only a thread inside ``watching()`` receives one, at most one per ``watching()``, and leaving withdraws one
  not yet delivered, so it never lands outside the template's own code (the caller turns any exception raised
  inside into its one-line render error);
- a nested ``watching()`` of the same render (a template rendering another) is the outer one's.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["POLL_SECONDS", "watching"]

POLL_SECONDS = 0.05
"""How often the watchdog reads the CPU time of the watched threads (only while there are any)."""

_SET_ASYNC_EXC = ctypes.pythonapi.PyThreadState_SetAsyncExc


@dataclass(slots=True)
class _Watch:
    deadline: float
    """In the thread's CPU-time clock (``time.thread_time()`` of the watched thread)."""
    error: type[BaseException]
    fired: bool = False


_lock = threading.Condition()
_watched: dict[int, _Watch] = {}
_thread: threading.Thread | None = None


@contextmanager
def watching(deadline: float, error: type[BaseException]) -> Iterator[None]:
    """While inside, this thread gets ``error`` raised in it once its CPU time passes ``deadline``."""
    ident = threading.get_ident()
    mine = _Watch(deadline, error)
    with _lock:
        outer = _watched.get(ident)
        nested = outer is not None and outer.deadline == deadline
        if not nested:  # an entry left by a render whose exit was itself interrupted is replaced
            _watched[ident] = mine
            _start()
            _lock.notify()
    try:
        yield
    finally:
        if not nested:
            with _lock:
                if _watched.get(ident) is mine:
                    del _watched[ident]
                if mine.fired:
                    _SET_ASYNC_EXC(ctypes.c_ulong(ident), None)  # withdraw it if it was not delivered yet


def _start() -> None:
    global _thread  # one watchdog per process, started by the first render
    if _thread is None:
        _thread = threading.Thread(target=_run, name="render-watchdog", daemon=True)
        _thread.start()


def _run() -> None:
    while True:
        with _lock:
            while not _watched:
                _lock.wait()
            for ident, watch in _watched.items():
                if not watch.fired and _cpu_time(ident) > watch.deadline:
                    watch.fired = True
                    _SET_ASYNC_EXC(ctypes.c_ulong(ident), ctypes.py_object(watch.error))
        time.sleep(POLL_SECONDS)


def _cpu_time(ident: int) -> float:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except OSError:  # the thread ended between its last render and now
        return 0.0
