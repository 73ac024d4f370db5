"""``ports.MetricsQuery`` over Prometheus' HTTP API (``GET /api/v1/query``), with the standard library only.

The result becomes a flat list of floats, one per series: a vector gives each sample, a scalar one value, a
matrix the last sample of each series. Unreachable servers and failing requests raise ``TransientError`` with the
address first, a query Prometheus cannot parse (HTTP 400 ``bad_data``) ``QueryRejectedError``; an empty result is
an empty list (the analysis reports it as inconclusive, never as success).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gitsync.adapters.http_check import checked_url
from gitsync.errors import QueryRejectedError, TransientError

__all__ = ["PrometheusClient"]


class PrometheusClient:
    def query(self, address: str, promql: str, timeout: float) -> list[float]:
        checked_url(address, "Prometheus address")
        url = f"{address.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
                document: Any = json.load(resp)
        except urllib.error.HTTPError as e:
            kind, text = _error_of(e)
            message = f"{address}: query {promql!r}: HTTP {e.code}: {text}"
            if e.code == 400 and kind == "bad_data":  # the query does not parse: no retry can help
                raise QueryRejectedError(message) from e
            raise TransientError(message) from e
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            raise TransientError(f"{address}: query {promql!r}: {e}") from e
        if document.get("status") != "success":
            raise TransientError(f"{address}: query {promql!r}: {document.get('error', 'failed')}")
        return _values(document.get("data") or {})


def _values(data: dict[str, Any]) -> list[float]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [float(result[1])]
    if kind == "vector" and isinstance(result, list):
        return [float(series["value"][1]) for series in result]
    if kind == "matrix" and isinstance(result, list):
        return [float(series["values"][-1][1]) for series in result if series.get("values")]
    return []


def _error_of(e: urllib.error.HTTPError) -> tuple[str, str]:
    """Prometheus' ``errorType`` and ``error`` of a refused request (the reason alone when the body is not its JSON)."""
    try:
        document = json.loads(e.read())
        return str(document.get("errorType", "")), str(document.get("error", e.reason))
    except (ValueError, OSError, AttributeError):
        return "", str(e.reason)
