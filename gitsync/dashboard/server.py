"""The dashboard's HTTP server: server-rendered pages, server-sent events, packaged assets. GET only.

Routes (every one behind ``Access.check``; any other method is 405, so no request can change anything):
- ``/``: environments x apps; ``/events`` streams the grid again whenever it changed;
- ``/apps/<env>/<app>``: objects with health, the rollout live, releases and their ledger evidence;
  ``/apps/<env>/<app>/events`` streams the rollout section whenever it changed (polled every ``LIVE_SECONDS``,
  so a step shows within about that);
- ``/apps/<env>/<app>/diff/<revision>``: the rendered change a release brought, Secret values masked;
- ``/promotions``: each version's way through the environments, from the Git ledger;
- ``/static/<file>``: the stylesheet and the script, shipped in the package (no build step).

Pages carry a Content-Security-Policy allowing only the dashboard's own script and styles.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote

import jinja2
from markupsafe import Markup

from gitsync import log as logging
from gitsync.dashboard.access import Access
from gitsync.dashboard.charts import sparkline
from gitsync.dashboard.read import Board
from gitsync.dashboard.view import (
    Cell,
    Forge,
    health_tone,
    ledger_by_release,
    promotion_chains,
    result_tone,
    sync_tone,
)
from gitsync.errors import GitsyncError
from gitsync.model import AppEnv

__all__ = ["DashboardServer", "Site"]

log = logging.get("gitsync.dashboard")

LIVE_SECONDS = 0.25
GRID_SECONDS = 2.0
KEEPALIVE_SECONDS = 15.0
CELL_CACHE = 5000
_STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_APP = re.compile(rf"/apps/(?P<env>{_NAME})/(?P<app>{_NAME})(?P<rest>/events|/diff/(?P<rev>[0-9a-f]{{7,40}}))?")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True, slots=True)
class Site:
    """What the pages need besides the board: where the repository lives (for commands and links) and who
    serves them (``local`` or ``agent``)."""

    repo: str
    forge: Forge | None
    served_by: str


class Pages:
    """Renders each page and fragment from the board (autoescaped templates: user data is never markup)."""

    def __init__(self, board: Board, site: Site) -> None:
        self.board = board
        self.site = site
        self._cells: dict[Cell, Markup] = {}
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("gitsync.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals.update(
            site=site,
            sparkline=sparkline,
            when=_when,
            duration=_duration,
            health_tone=health_tone,
            result_tone=result_tone,
            sync_tone=sync_tone,
        )

    def _render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**context)

    def grid(self, fragment: bool = False) -> str:
        grid = self.board.grid()
        return self._render("grid.html", grid=grid, fragment=fragment, cell_html=self._cell)

    def _cell(self, cell: Cell) -> Markup:
        """A cell's HTML, rendered once per state of it: a grid of 150 cells is mostly unchanged between loads."""
        html = self._cells.get(cell)
        if html is None:
            html = Markup(self._render("cell.html", c=cell))  # noqa: S704 - an autoescaped template's output
            if len(self._cells) >= CELL_CACHE:
                self._cells.clear()
            self._cells[cell] = html
        return html

    def app(self, key: AppEnv, namespace: str) -> str:
        rows = [r for r in self.board.ledger() if r.entry.app == key.app and r.entry.env == key.env]
        return self._render(
            "app.html",
            key=key,
            namespace=namespace,
            status=self.board.status(key, namespace),
            live=self.board.live(key, namespace, self.site.repo),
            objects=self.board.objects(key, namespace),
            releases=self.board.releases(key, namespace)[:50],
            ledger=ledger_by_release(rows),
            fragment=False,
        )

    def live(self, key: AppEnv, namespace: str) -> str:
        return self._render("live.html", live=self.board.live(key, namespace, self.site.repo))

    def diff(self, key: AppEnv, namespace: str, revision: str) -> str:
        release = next((r for r in self.board.releases(key, namespace) if r.revision.startswith(revision)), None)
        text = self.board.diff(key, namespace, release.revision) if release is not None else None
        return self._render("diff.html", key=key, release=release, text=text)

    def promotions(self) -> str:
        rows = self.board.ledger()
        chains = promotion_chains(rows, self.board.env_order)
        return self._render(
            "promotions.html", chains=chains, has_ledger=bool(rows), signers_problem=self.board.ledger_problem()
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "gitsync-dashboard"
    sys_version = ""
    timeout = 10

    def log_message(self, format: str, *args: object) -> None:
        """No stdlib access log (it would print paths to stderr); refusals are logged as events."""

    def _send(self, status: int, body: str | bytes, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="gitsync"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self, status: int, reason: str) -> None:
        self._send(status, f"{status}: {reason}\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self.server.serves_host(self.headers.get("Host")):
            self._refuse(403, "this dashboard answers only to localhost, 127.0.0.1 and [::1] (the Host header)")
            return
        decision = self.server.access.check(self.headers.get("Authorization"))
        if decision.status != 200:
            self._refuse(decision.status, decision.reason)
            return
        path = unquote(self.path.partition("?")[0])
        pages = self.server.pages
        try:
            if path == "/":
                self._send(200, pages.grid())
            elif path == "/events":
                self._stream(lambda: pages.grid(fragment=True), "grid", GRID_SECONDS)
            elif path == "/promotions":
                self._send(200, pages.promotions())
            elif path.startswith("/static/") and path[len("/static/") :] in _STATIC:
                name = path[len("/static/") :]
                self._send(
                    200, resources.files("gitsync.dashboard").joinpath("static", name).read_bytes(), _STATIC[name]
                )
            elif (found := _APP.fullmatch(path)) is not None:
                self._app(AppEnv(found["app"], found["env"]), found["rest"] or "", found["rev"] or "")
            else:
                self._refuse(404, "no such page")
        except GitsyncError as e:
            log.warning("dashboard.read_failed", path=path, error=str(e))
            self._refuse(503, f"cannot read the cluster now: {e}")

    def _app(self, key: AppEnv, rest: str, revision: str) -> None:
        pages = self.server.pages
        namespace = pages.board.namespace(key)
        if namespace is None:
            self._refuse(404, f"{key}: no such app-env (no gitsync state for it in the cluster)")
        elif rest == "/events":
            self._stream(lambda: pages.live(key, namespace), "live", LIVE_SECONDS)
        elif revision:
            self._send(200, pages.diff(key, namespace, revision))
        else:
            self._send(200, pages.app(key, namespace))

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._refuse(405, "the dashboard is read-only")

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def _stream(self, fragment: Callable[[], str], event: str, every: float) -> None:
        """Server-sent events: ``event`` with ``{"html": ...}`` each time the fragment changed, a comment line
        to keep the connection open otherwise; ends when the client goes or the server stops."""
        self.send_response(200)
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.close_connection = True
        last, quiet_since = "", time.monotonic()
        self.wfile.write(b": connected\n\n")
        self.wfile.flush()
        try:
            for html in _changes(fragment, every, self.server.stopping):
                if html and html != last:
                    self.wfile.write(f"event: {event}\ndata: {json.dumps({'html': html})}\n\n".encode())
                    last, quiet_since = html, time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    self.wfile.write(b": keep-alive\n\n")
                    quiet_since = time.monotonic()
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return


def _changes(fragment: Callable[[], str], every: float, stopping: threading.Event) -> Iterator[str]:
    """The fragment every ``every`` seconds (a read that fails repeats the last one) until ``stopping``. The first
    comes after one interval: the page that opened the stream was rendered just now, and reading again at once
    would only compete with it for the CPU while it paints."""
    last = ""
    while not stopping.wait(every):
        try:
            last = fragment()
        except GitsyncError as e:
            log.warning("dashboard.read_failed", error=str(e))
        yield last


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], pages: Pages, access: Access) -> None:
        self.pages = pages
        self.access = access
        self.stopping = threading.Event()
        self.loopback = _is_loopback(address[0])
        super().__init__(address, _Handler)

    def serves_host(self, header: str | None) -> bool:
        """On a loopback address only the loopback names: a web page whose own name an attacker's DNS points at
        127.0.0.1 (DNS rebinding) is then refused, instead of reading the board with the user's kubeconfig, as
        ``kubectl proxy --accept-hosts`` does. Elsewhere (the agent's, behind its token review) any name."""
        if not self.loopback:
            return True
        name = (header or "").strip().lower()
        name = name.partition("]")[0] + "]" if name.startswith("[") else name.partition(":")[0]
        return name in _LOOPBACK_NAMES


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class DashboardServer:
    """Serves the dashboard on ``host:port`` from a background thread (port 0 picks a free one)."""

    def __init__(self, host: str, port: int, board: Board, site: Site, access: Access) -> None:
        self._server = _Server((host, port), Pages(board, site), access)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="dashboard", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve, and read the grid once in the background so the first visitor finds the documents parsed."""
        self._thread.start()
        threading.Thread(target=self._warm, name="dashboard-warm", daemon=True).start()

    def _warm(self) -> None:
        try:
            self._server.pages.grid()
        except GitsyncError as e:
            log.warning("dashboard.read_failed", error=str(e))

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
