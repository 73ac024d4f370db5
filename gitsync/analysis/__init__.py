"""Rollout analysis: named checks (pod health, Prometheus queries, HTTP) measured on an interval, judged by a
small safe condition language, and folded into one verdict. No data is inconclusive, never success.

``spec`` (what a check is), ``condition`` (the language), ``judge`` (a result to an outcome), ``run`` (counting
measurements into a verdict), ``pod_health`` (the fail-fast pod gate) are pure; ``measure`` does the I/O through
the ports.
"""
