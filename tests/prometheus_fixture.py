"""A real Prometheus for analysis tests, scraping a tiny exporter whose values each test sets.

- `prometheus` (session): Debian's /usr/bin/prometheus on a free 127.0.0.1 port, 1 s scrape interval, scraping
  `exporter`; started only when a test asks for it; FAILS (never skips) when the binary is missing.
- `metrics` (function): a handle that sets series labelled with this test's own `test` label, so tests never see
  each other's values; `metrics.query(name)` is the PromQL to put in a check; cleared afterwards.

Loaded from tests/conftest.py with `pytest_plugins`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PROMETHEUS = "/usr/bin/prometheus"


class Exporter:
    """Serves /metrics in the Prometheus text format from a dict the tests change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], float] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, name: str, labels: str, value: float) -> None:
        with self._lock:
            self._series[(name, labels)] = value

    def clear(self, labels: str) -> None:
        with self._lock:
            for key in [k for k in self._series if k[1] == labels]:
                del self._series[key]

    def render(self) -> str:
        with self._lock:
            return "".join(f"{name}{{{labels}}} {value}\n" for (name, labels), value in sorted(self._series.items()))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Prometheus:
    address: str
    exporter: Exporter

    def query(self, promql: str) -> list[float]:
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.load(resp)
        return [float(s["value"][1]) for s in doc["data"]["result"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    if not Path(PROMETHEUS).is_file() and not shutil.which("prometheus"):
        pytest.fail(
            f"{PROMETHEUS} not found: install it with `apt-get install -y --no-install-recommends prometheus` "
            "(the analysis tests need a real Prometheus)",
            pytrace=False,
        )
    exporter = Exporter()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: exporter\n    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    port = _free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS if Path(PROMETHEUS).is_file() else str(shutil.which("prometheus")),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{address}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not become ready; see {workdir / 'prometheus.log'}", pytrace=False)
            time.sleep(0.2)
        yield Prometheus(address, exporter)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        exporter.close()


@dataclass
class Metrics:
    """This test's series: `set("errors", 0.01)` exposes `errors{test="<id>"} 0.01` at the next scrape."""

    prometheus: Prometheus
    test: str

    @property
    def address(self) -> str:
        return self.prometheus.address

    @property
    def labels(self) -> str:
        return f'test="{self.test}"'

    def set(self, name: str, value: float) -> None:
        self.prometheus.exporter.set(name, self.labels, value)

    def clear(self) -> None:
        self.prometheus.exporter.clear(self.labels)

    def query(self, name: str) -> str:
        return f"{name}{{{self.labels}}}"

    def wait_for(self, name: str, value: float, timeout: float = 60.0) -> None:
        """Block until Prometheus has scraped ``value`` (the exporter changes take up to a scrape interval)."""
        deadline = time.monotonic() + timeout
        while self.prometheus.query(self.query(name)) != [value]:
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus never saw {self.query(name)} == {value}")
            time.sleep(0.2)

    def wait_absent(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.prometheus.query(self.query(name)):
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus still has {self.query(name)}")
            time.sleep(0.2)


@pytest.fixture
def metrics(prometheus: Prometheus) -> Iterator[Metrics]:
    handle = Metrics(prometheus, secrets.token_hex(4))
    yield handle
    handle.clear()
