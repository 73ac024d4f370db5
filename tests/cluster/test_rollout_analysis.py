"""The analysis adapters against real servers: Prometheus (Debian's binary) and HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_fixture import Metrics

from gitsync.adapters.http_check import HttpClient
from gitsync.adapters.prometheus import PrometheusClient
from gitsync.analysis.condition import parse
from gitsync.analysis.measure import CheckContext, Measurer
from gitsync.analysis.run import CheckOutcome
from gitsync.analysis.spec import CheckSpec, CheckType
from gitsync.errors import QueryRejectedError, TransientError

CTX = CheckContext(namespace="shop", app="web", env="prod", workload="web-canary", stable="web", track="canary")


def errors_check(metrics: Metrics, query: str, **fields: str) -> CheckSpec:
    """A Prometheus check of the test's server: ``query``'s first value must stay below 5 %."""
    return CheckSpec(
        "errors",
        CheckType.PROMETHEUS,
        query=query,
        address=metrics.address,
        success_condition=parse("result[0] < 0.05"),
        **fields,
    )


def test_prometheus_values_and_no_data(metrics) -> None:
    metrics.set("errors_ratio", 0.25)
    metrics.wait_for("errors_ratio", 0.25)
    client = PrometheusClient()
    assert client.query(metrics.address, metrics.query("errors_ratio"), 5) == [0.25]
    assert client.query(metrics.address, 'absent_metric{test="none"}', 5) == []

    measurer = Measurer(prometheus=client)
    failed = measurer.measure(errors_check(metrics, metrics.query("errors_ratio")), CTX, 1.0)
    assert (failed.outcome, failed.value) == (CheckOutcome.FAILURE, [0.25])
    missing = errors_check(metrics, 'nothing{app="${app}"}')
    assert measurer.measure(missing, CTX, 1.0).outcome is CheckOutcome.INCONCLUSIVE


def test_prometheus_down_is_transient_and_a_query_that_does_not_parse_is_not(metrics) -> None:
    with pytest.raises(TransientError, match=r"127\.0\.0\.1:1"):
        PrometheusClient().query("http://127.0.0.1:1", "up", 2)
    with pytest.raises(QueryRejectedError, match=r"parse error"):
        PrometheusClient().query(metrics.address, "sum(", 5)
    # A typo is inconclusive at once (the rollout pauses) and names the field to fix; an outage is an error, five
    # of which in a row are needed before it pauses.
    typo = errors_check(metrics, 'rate(errors{app="${app}"', path="rollout.analysis.checks[1]")
    measured = Measurer(prometheus=PrometheusClient()).measure(typo, CTX, 1.0)
    assert measured.outcome is CheckOutcome.INCONCLUSIVE
    assert measured.message.startswith("rollout.analysis.checks[1].query: ") and "parse error" in measured.message


@pytest.fixture
def web() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = (200, b'{"status": "ok", "rate": 0.01}') if self.path == "/ok" else (503, b"down")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_check_status_and_json_field(web: str) -> None:
    measurer = Measurer(http=HttpClient())
    good = CheckSpec(
        "smoke", CheckType.HTTP, url=f"{web}/ok", json_path="rate", success_condition=parse("result < 0.05")
    )
    assert measurer.measure(good, CTX, 1.0).outcome is CheckOutcome.SUCCESS
    bad = CheckSpec("smoke", CheckType.HTTP, url=f"{web}/broken")
    measured = measurer.measure(bad, CTX, 1.0)
    assert (measured.outcome, measured.value) == (CheckOutcome.FAILURE, 503)
    down = CheckSpec("smoke", CheckType.HTTP, url="http://127.0.0.1:1/", timeout=2)
    assert measurer.measure(down, CTX, 1.0).outcome is CheckOutcome.ERROR
