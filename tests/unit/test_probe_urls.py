"""Analysis probes never echo URL credentials: their errors become evidence in Events and the release history."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gitsync.adapters.http_check import HttpClient
from gitsync.adapters.prometheus import PrometheusClient
from gitsync.errors import TransientError

PROBES = [
    pytest.param(
        lambda: HttpClient().get("http://admin:hunter2@127.0.0.1:9/healthz", 1), "http://***@127.0.0.1:9/healthz"
    ),
    pytest.param(lambda: HttpClient().get("https://hunter2@127.0.0.1:9/", 1), "https://***@127.0.0.1:9/"),
    pytest.param(
        lambda: PrometheusClient().query("http://admin:hunter2@127.0.0.1:9", "up", 1), "http://***@127.0.0.1:9"
    ),
]


@pytest.mark.parametrize(("probe", "shown"), PROBES)
def test_credentials_in_a_probe_url_are_refused_without_being_shown(probe: Callable[[], object], shown: str) -> None:
    with pytest.raises(TransientError) as e:
        probe()
    assert str(e.value).startswith(f"{shown}: credentials in a ")
    assert "hunter2" not in str(e.value)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(TransientError, match=r"^ftp://h/x: not an http\(s\) URL$"):
        HttpClient().get("ftp://h/x", 1)
    with pytest.raises(TransientError, match=r"^prom:9090: not an http\(s\) Prometheus address$"):
        PrometheusClient().query("prom:9090", "up", 1)
