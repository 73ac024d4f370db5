"""A TCP relay in front of an API server on a port of its own: what its clients meet when the server goes away
(``stop``: the port refuses connections; ``start`` again on the same port) or restarts (``restart``: each
connection open before it is closed, without an answer, when its next request comes, as a server shutting down
closes the kept-alive connections of its clients)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    def __init__(self, server: str) -> None:
        host, _, port = server.removeprefix("https://").partition(":")
        self.target = (host, int(port or 443))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._generation = 0

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def restart(self) -> None:
        self._generation += 1

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self._open += [conn, upstream]
            born = self._generation
            threading.Thread(target=self._pump, args=(conn, upstream, born), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, born: int | None) -> None:
        """``born``: the generation of a client's connection (None: the server's answers)."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if born is not None and born != self._generation:
                    break  # a request on a connection from before the restart: closed unanswered
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() blocked on it: closing alone would not
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._open.clear()
